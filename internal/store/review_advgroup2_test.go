package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// Review of 5b3233a, cost: every probe the handler makes is a block of its
// own, a subtransaction, and each one that locks a row (every member whose
// rows are free) takes an XID and commits into the group's transaction,
// keeping its locks. Blaming member k of a group costs k+1 XIDs, and past
// 64 the backend's subtransaction cache overflows, so every snapshot taken
// meanwhile by any backend is marked suboverflowed (pg_subtrans lookups)
// until the transaction ends. One statement with SKIP LOCKED (no
// subtransaction) finds the same held rows.
func TestReviewAdvanceGroupProbesCostAnXIDPerMember(t *testing.T) {
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	const n = 80
	epochs := claimAll(t, tb, target, n)
	holder, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.WithoutCancel(tb.ctx)) }()
	_, err = holder.Exec(tb.ctx, `UPDATE projectord.checkpoints SET updated_at = now() WHERE projector = $1`, projectorName(n-1))
	require.NoError(t, err)
	ms := make([]move, n)
	for i := range n {
		ms[i] = move{projector: projectorName(i), epoch: epochs[i], to: store.Cursor{XID: 7, Position: 1}, events: 1}
	}
	nextXID := func() (x uint64) {
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint`).Scan(&x))
		return x
	}
	before := nextXID()
	err = pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(tb.ctx, `SET LOCAL lock_timeout = '200ms'`); err != nil {
			return err
		}
		return advanceGroup(tb.ctx, tx, ms)
	})
	requireRefused(t, err, "80")
	used := nextXID() - before
	t.Logf("XIDs assigned by one refused group of %d: %d", n, used)
	require.Less(t, used, uint64(64), "one group's refusal assigns fewer XIDs than the subtransaction cache holds")
}
