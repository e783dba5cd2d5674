package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// A request's deadline bounds its commit as a deadline of its context
// would, when it comes before the target's timeout: alone, and in a group
// (whose context takes half of what the member with the least time has
// left, the member's solo commit the rest). The handlers wait for a table
// lock that outlasts the deadline; the context has none, and the target's
// timeout is a minute, so only the deadline can end the wait.
func TestCommitRequestDeadlineBoundsTheCommit(t *testing.T) {
	t.Parallel()
	for _, grouped := range []bool{false, true} {
		tb := setupGroups(t)
		target := store.NewTarget(tb.pool, time.Minute)
		var queued func(testing.TB, int)
		if grouped {
			queued = store.WatchGroups(target)
		}
		const n = 3
		epochs := claimAll(t, tb, target, n)
		lock, err := tb.pool.Begin(tb.ctx)
		require.NoError(t, err)
		defer func() { _ = lock.Rollback(context.WithoutCancel(tb.ctx)) }()
		_, err = lock.Exec(tb.ctx, `LOCK TABLE rm IN SHARE MODE`) // blocks the handlers' INSERTs
		require.NoError(t, err)

		const budget = 1500 * time.Millisecond
		begun := time.Now()
		errs := make([]chan error, n)
		for i := range n {
			req := batch(projectorName(i), epochs[i], 0, 2)
			req.Deadline = time.Now().Add(budget)
			errs[i] = make(chan error, 1)
			go func() { errs[i] <- target.Commit(context.Background(), req, tb.sink) }()
			if grouped {
				queued(t, 1) // the first is the committer's; the others queue behind it
			}
		}
		for i := range n {
			select {
			case err := <-errs[i]:
				// The server's lock_timeout or the client's deadline,
				// both derived from the request's deadline: the database's
				// fault, never the event's.
				require.Error(t, err, "grouped %v: %s committed under the lock", grouped, projectorName(i))
				require.False(t, store.Classify(err).CountsAgainstEvent(), "grouped %v: %v", grouped, err)
			case <-time.After(30 * time.Second):
				t.Fatalf("grouped %v: %s's commit outlived its deadline by far (the target's timeout is a minute)", grouped, projectorName(i))
			}
		}
		// Far less than the target's minute; the deadline is 1.5 s.
		require.Less(t, time.Since(begun), 20*time.Second, "grouped %v", grouped)
		require.NoError(t, lock.Rollback(tb.ctx))
		for i := range n {
			requireLanded(t, tb, target, projectorName(i), store.Cursor{}, 0)
		}
	}
}
