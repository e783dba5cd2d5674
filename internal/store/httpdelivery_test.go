package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// A paused HTTP projector records no delivery (so its leader posts nothing)
// and moves no checkpoint, and both say ErrPaused, not ErrFenced: the
// leader waits for the resume instead of stepping down. A fenced one still
// gets ErrFenced, paused or not.
func TestHTTPDeliveryRefusesAPausedProjector(t *testing.T) {
	tb, target, _, events, cp := operatorFixture(t)
	d := store.Delivery{From: store.Cursor{}, Last: events[1].Cursor, Events: 2}
	require.NoError(t, target.RecordDelivery(tb.ctx, "p", cp.Epoch, d))
	_, err := target.Pause(tb.ctx, "p", "test")
	require.NoError(t, err)

	err = target.RecordDelivery(tb.ctx, "p", cp.Epoch, d)
	require.ErrorIs(t, err, store.ErrPaused)
	require.NotErrorIs(t, err, store.ErrFenced)
	err = target.Advance(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[1].Cursor, Events: events[:2]})
	require.ErrorIs(t, err, store.ErrPaused)
	require.ErrorIs(t, target.RecordDelivery(tb.ctx, "p", cp.Epoch+1, d), store.ErrFenced)

	_, err = target.Resume(tb.ctx, "p")
	require.NoError(t, err)
	require.NoError(t, target.RecordDelivery(tb.ctx, "p", cp.Epoch, d))
	require.NoError(t, target.Advance(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[1].Cursor, Events: events[:2]}))
}
