package store_test

import (
	"context"
	"testing"
	"time"

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
// a live row a slow promotion holds FOR UPDATE, and for a statement_timeout
// inside advance_group.
func TestReviewAdvanceGroupLockWaitOnOneCheckpointBlamesThatMember(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	// 8 s: the group's context is 4 s, its lock_timeout 2 s.
	target := store.NewTarget(tb.pool, 8*time.Second)
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
	testsupport.Until(t, "the others landed", time.Minute, func() bool {
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
