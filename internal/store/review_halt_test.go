package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// TestReviewClaimWithoutSinkEndsAHalt: Claim names no sink, so (as its
// documentation says, and as the memory backend does for a fingerprint
// other than the halt's) it claims a halted projector, ending its halt;
// and a halt recorded without a fingerprint is ended by a claim under
// one. SQL's NULL made both refuse: halted_sink = NULL is never true, so
// NOT (... AND NULL) is NULL and the claim updated nothing.
func TestReviewClaimWithoutSinkEndsAHalt(t *testing.T) {
	tb := setup(t)
	target := store.NewTarget(tb.pool, 5*time.Second)
	halt := func(projector, sink string) store.Checkpoint {
		t.Helper()
		c, err := target.ClaimSink(tb.ctx, projector, "node-a", 0, store.OrderXID8, sink)
		require.NoError(t, err)
		require.NoError(t, target.Halt(tb.ctx, projector, c.Epoch, nil, sink, "bad handler"))
		c, _, err = target.Load(tb.ctx, projector)
		require.NoError(t, err)
		require.NotNil(t, c.Halt)
		return c
	}

	h := halt("named", "sql:aaaa")
	_, err := target.ClaimSink(tb.ctx, "named", "node-b", 0, store.OrderXID8, "sql:aaaa")
	require.ErrorIs(t, err, store.ErrProjectorHalted, "the same sink is refused")
	c, err := target.Claim(tb.ctx, "named", "node-b", 0, store.OrderXID8)
	require.NoError(t, err, "a claim that names no sink ends the halt")
	require.Equal(t, h.Epoch+1, c.Epoch)
	require.Nil(t, c.Halt)
	require.Equal(t, store.StatusRunning, c.Status)

	h = halt("unnamed", "")
	c, err = target.ClaimSink(tb.ctx, "unnamed", "node-b", 0, store.OrderXID8, "sql:bbbb")
	require.NoError(t, err, "a claim under a fingerprint ends a halt recorded under none")
	require.Equal(t, h.Epoch+1, c.Epoch)
	require.Nil(t, c.Halt)
}
