package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

// `dead-letters retry` tells a requested row the leader applied from one
// discarded while the command waits: the discarded one is reported gone
// without being applied, and the command fails.
func TestRetryReportsADiscardedDeadLetterAsNotApplied(t *testing.T) {
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = store.Migrate(ctx, pool, "test")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO projectord.dead_letters (projector, xid, position, stream_id, event_type, payload, error, attempts)
		VALUES ('p', '5', 7, 's', 'A', '{}', 'broken handler', 3)`)
	require.NoError(t, err)
	target := store.NewTarget(pool, 5*time.Second)
	requested, err := target.RequestRetry(ctx, "p", nil)
	require.NoError(t, err)
	// Meanwhile another operator discards it; no leader applied anything.
	_, err = target.DiscardDeadLetter(ctx, "p", 7)
	require.NoError(t, err)

	var out bytes.Buffer
	err = waitRetried(ctx, &out, target, requested, time.Second)
	require.NotContains(t, out.String(), "position 7: applied", "the event was discarded, not applied")
	require.Contains(t, out.String(), "position 7: gone without being applied")
	require.Error(t, err)
}
