package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// Review of advance_group (migration 0010). A member whose checkpoint row
// is held by another transaction (an operator's pause or reset, a new
// leader's claim, a status write: anything that holds the row a while)
// makes the group's checkpoint move wait until the group's lock_timeout.
// With one advance() per member that 55P03 was raised by the member's own
// statement, so the member was blamed: it went alone and the others
// committed as a group. advance_group raises it for the whole statement
// and refusedMember only knows PJ003, so nobody is blamed and every member
// of the group commits alone (up to 256 solo transactions, each on half
// its time, for one held row). The same happens when the group waits for
// a live row a slow promotion holds FOR UPDATE. Fixed: advance_group
// catches the lock wait's 55P03 and names the member whose row is held
// (TestAdvanceGroupLockWaitOnALiveRowBlamesThatMember for the live row).
func TestReviewAdvanceGroupLockWaitOnOneCheckpointBlamesThatMember(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	// 20 s: the group's context is 10 s, its lock_timeout 5 s; the
	// blamed member's own commit then waits up to 10 s, far longer than
	// the others' group needs to land.
	target := store.NewTarget(tb.pool, 20*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, blocked = 4, 1
	epochs := claimAll(t, tb, target, n)
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	// The member's checkpoint row, held as a status write or an operator
	// command holds it (the row only: nothing of its epoch or cursor changes).
	_, err = tx.Exec(tb.ctx, `UPDATE projectord.checkpoints SET updated_at = now() WHERE projector = $1`, projectorName(blocked))
	require.NoError(t, err)

	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	// The observer hears of the group after its COMMIT returns, which
	// is after the rows are visible: wait for both.
	testsupport.Until(t, "the others landed and their commit was reported", time.Minute, func() bool {
		if groups, singles := log.seen(); len(groups)+singles == 0 {
			return false
		}
		for i := range n {
			if i == blocked {
				continue
			}
			c, ok, err := target.Load(tb.ctx, projectorName(i))
			if err != nil || !ok || c.Cursor != reqs[i].To {
				return false
			}
		}
		return true
	})
	groups, singles := log.seen()
	require.Equal(t, []int{n - 1}, groups, "the others commit in one group once the waiting member is blamed")
	require.Zero(t, singles, "nobody but the waiting member commits alone (it is still waiting)")
	require.NoError(t, tx.Rollback(tb.ctx))
	wait()
	for i, err := range errs {
		require.NoError(t, err, i)
	}
	requireLanded(t, tb, target, projectorName(blocked), reqs[blocked].To, 3)
}

// Ruled out (passes): under READ COMMITTED, advance_group's UPDATE ... FROM
// unnest rechecks a row a concurrent pause or claim changed while the
// UPDATE waited for it (EvalPlanQual with the unnest row carried along),
// so the member is refused, naming it, and nothing moves; a status write
// that changes neither epoch, cursor nor pause lets it move.
func TestReviewAdvanceGroupRechecksARowChangedWhileItWaited(t *testing.T) {
	t.Parallel()
	for _, change := range []string{
		`UPDATE projectord.checkpoints SET paused_at = now(), paused_by = 'r' WHERE projector = $1`,
		`UPDATE projectord.checkpoints SET epoch = epoch + 1 WHERE projector = $1`,
		`UPDATE projectord.checkpoints SET last_error = 'x', updated_at = now() WHERE projector = $1`,
	} {
		tb := setupGroups(t)
		target := store.NewTarget(tb.pool, 30*time.Second)
		const n, held = 3, 2
		epochs := claimAll(t, tb, target, n)
		ms := make([]move, n)
		for i := range n {
			ms[i] = move{projector: projectorName(i), epoch: epochs[i], to: store.Cursor{XID: 7, Position: int64(10 + i)}, events: 1}
		}
		other, err := tb.pool.Begin(tb.ctx)
		require.NoError(t, err)
		_, err = other.Exec(tb.ctx, change, projectorName(held))
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			done <- pgx.BeginFunc(context.Background(), tb.pool, func(tx pgx.Tx) error { return advanceGroup(context.Background(), tx, ms) })
		}()
		testsupport.Until(t, "advance_group waiting for the row", 30*time.Second, func() bool {
			var waiting bool
			_ = tb.pool.QueryRow(tb.ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND query LIKE '%advance_group%')`).Scan(&waiting)
			return waiting
		})
		require.NoError(t, other.Commit(tb.ctx))
		err = <-done
		moved := 0
		for i := range n {
			c, _, lerr := target.Load(tb.ctx, projectorName(i))
			require.NoError(t, lerr)
			if c.Cursor == ms[i].to {
				moved++
			}
		}
		if change[len(`UPDATE projectord.checkpoints SET `)] == 'l' { // last_error
			require.NoError(t, err, change)
			require.Equal(t, n, moved, change)
			continue
		}
		requireRefused(t, err, "3")
		require.Zero(t, moved, change)
	}
}

// Ruled out (passes): a group that waits for a promotion holding the live
// row FOR UPDATE sees the promotion once it commits (the check that
// follows the lock is a statement of its own, with a new snapshot) and
// refuses the older version, naming it; nothing moves.
func TestReviewAdvanceGroupWaitingForAPromotionRefusesTheOlderVersion(t *testing.T) {
	tb := setup(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	v1, v2, e1, _ := versionSetup(t, tb, target)
	other, err := target.Claim(tb.ctx, "other", "n", 0, store.OrderXID8)
	require.NoError(t, err)
	promo, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = promo.Rollback(context.WithoutCancel(tb.ctx)) }()
	_, err = promo.Exec(tb.ctx, `SELECT version FROM projectord.live_versions WHERE name = $1 FOR UPDATE`, v1.Name)
	require.NoError(t, err)
	_, err = promo.Exec(tb.ctx, `UPDATE projectord.live_versions SET version = $2 WHERE name = $1`, v1.Name, v2.Version)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- pgx.BeginFunc(context.Background(), tb.pool, func(tx pgx.Tx) error {
			return advanceGroup(context.Background(), tx, []move{
				{projector: "other", epoch: other.Epoch, to: store.Cursor{Position: 1}, events: 1},
				{projector: v1.Key(), epoch: e1, to: store.Cursor{Position: 1}, events: 1},
			})
		})
	}()
	testsupport.Until(t, "advance_group waiting for the live row", 30*time.Second, func() bool {
		var waiting bool
		_ = tb.pool.QueryRow(tb.ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%advance_group%')`).Scan(&waiting)
		return waiting
	})
	require.NoError(t, promo.Commit(tb.ctx))
	requireRefused(t, <-done, "2")
	for _, p := range []string{"other", v1.Key()} {
		c, _, err := target.Load(tb.ctx, p)
		require.NoError(t, err)
		require.Equal(t, store.Cursor{}, c.Cursor, p)
	}
}
