package store_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// Review of the group-commit parts (commitParts, groupParts).

// poolOf is a pool of exactly conns connections on tb's database: the
// number of parts follows the pool's size, and pgxpool's default size is
// max(4, runtime.NumCPU()), so a test that leaves it to the default
// expects whatever the machine it was written on gives.
func poolOf(t *testing.T, tb *groupBundle, conns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(tb.url)
	require.NoError(t, err)
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(tb.ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestGroupCommitCapsItsGroups/batches expects each take in halves, which
// is what a pool of 4 to 11 connections gives (that test now sizes its
// pool: pgxpool's default, max(4, NumCPU), gave 3 or 4 parts on a runner
// of 12 or more cores). This is its scenario on a 16-connection pool.
func TestReviewCapsItsGroupsOnASixteenCorePool(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(poolOf(t, tb, 16), 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n = 300
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = store.CommitRequest{Projector: projectorName(i), Epoch: epochs[i], To: store.Cursor{XID: 1, Position: 1}}
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	wait()
	for i, err := range errs {
		require.NoError(t, err, i)
	}
	groups, singles := log.seen()
	slices.Sort(groups)
	// A quarter of 16 connections: the take of 256 in four parts, the
	// take of 44 in two (one per 16 batches).
	require.Equal(t, []int{(n - 256) / 2, (n - 256) / 2, 64, 64, 64, 64}, groups)
	require.Zero(t, singles)
}

// The second commit (no parts from a pool of one or two connections) has
// no test of its own: every store test runs on a pool of at least 4. A
// take of 40 with a failing member, on pools of 1 to 4 connections: whole
// on 1 and 2 (at 8516b01 a pool of 2 gave two parts, taking both
// connections), in halves on 3 and 4; on every size each member gets its
// answer (no wedge on the one connection the culprit's solo commit and
// the requeued group compete for) and exactly the others land.
func TestReviewGroupPartsOnSmallPools(t *testing.T) {
	t.Parallel()
	const n, bad = 40, 4
	for conns, want := range map[int32][]int{1: {n - 1}, 2: {n - 1}, 3: {n/2 - 1, n / 2}, 4: {n/2 - 1, n / 2}} {
		t.Run(fmt.Sprintf("max_conns=%d", conns), func(t *testing.T) {
			t.Parallel()
			tb := setupGroups(t)
			target := store.NewTarget(poolOf(t, tb, conns), 30*time.Second)
			var log commitLog
			target.ObserveCommits(log.observe)
			queued, release := store.HoldGroups(target)
			epochs := claimAll(t, tb, target, n)
			_, err := tb.pool.Exec(tb.ctx, `INSERT INTO rm (projector, position) VALUES ($1, 2)`, projectorName(bad))
			require.NoError(t, err)
			reqs := make([]store.CommitRequest, n)
			for i := range n {
				reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
			}
			errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
			release()
			wait()

			var applyErr *store.ApplyError
			require.ErrorAs(t, errs[bad], &applyErr)
			for i := range n {
				if i != bad {
					require.NoError(t, errs[i], projectorName(i))
					requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
				}
			}
			groups, singles := log.seen()
			slices.Sort(groups)
			require.Equal(t, want, groups)
			require.Zero(t, singles)
		})
	}
}

// TestGroupCommitLargeGroupsCommitInParts shows the parts are separate
// transactions, not that they run side by side: committed one after the
// other they would pass it too. Here the first part's first member waits
// for an advisory lock the test holds; the second part commits meanwhile,
// and the first only once the lock is let go.
func TestReviewPartsCommitSideBySide(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	// Two minutes: the group's lock_timeout (a quarter) stays far above
	// the bound on the other part's commit below.
	target := store.NewTarget(poolOf(t, tb, 4), 2*time.Minute)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, key = 40, 4242
	epochs := claimAll(t, tb, target, n)
	blocked, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO rm (projector, position)
		SELECT @stream_id::text, @position::bigint FROM (SELECT pg_advisory_xact_lock_shared(4242)) l`}, "")
	require.NoError(t, err)
	reqs := make([]store.CommitRequest, n)
	sinks := make([]*store.SQLSink, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	sinks[0] = blocked

	lock, err := tb.pool.Acquire(tb.ctx)
	require.NoError(t, err)
	defer lock.Release()
	_, err = lock.Exec(tb.ctx, `SELECT pg_advisory_lock($1)`, key)
	require.NoError(t, err)
	errs, wait := commitAll(t, tb, target, queued, reqs, sinks, nil)
	release()

	testsupport.Until(t, "the second part committed", time.Minute, func() bool {
		groups, _ := log.seen()
		return slices.Contains(groups, n/2)
	})
	requireLanded(t, tb, target, projectorName(n-1), reqs[n-1].To, 3)
	requireLanded(t, tb, target, projectorName(1), store.Cursor{}, 0)
	// The second part can commit before the first has reached the lock
	// (its BEGIN and pipeline run on their own connection): wait for it
	// to be there, still uncommitted.
	testsupport.Until(t, "the first part waiting for the lock", time.Minute, func() bool {
		var waiting int
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting))
		return waiting == 1
	})
	requireLanded(t, tb, target, projectorName(1), store.Cursor{}, 0)

	_, err = lock.Exec(tb.ctx, `SELECT pg_advisory_unlock($1)`, key)
	require.NoError(t, err)
	wait()
	for i := range n {
		require.NoError(t, errs[i], projectorName(i))
		requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
	}
	groups, singles := log.seen()
	require.Equal(t, []int{n / 2, n / 2}, groups)
	require.Zero(t, singles)
	require.Equal(t, []int{n / 2, n / 2}, transactions(t, tb))
}
