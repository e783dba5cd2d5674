package store_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// Review of "a group of at least 32 batches commits in parts side by side".
//
// One take used to be one transaction, so its batches never waited for
// each other's locks (README: the handlers of one target database run in
// one transaction, one batch after another). In parts, two batches of one
// take that write the same rows (projectors sharing a read-model row, a
// counter, an upsert of one entity) run in two concurrent transactions:
// they wait for each other, and can deadlock. PostgreSQL then aborts one
// part after deadlock_timeout (1 s by default, against a 75 ms latency
// target); its batch is sent alone and the rest of its part goes round
// again. Every batch is still applied once; what the target must not do
// is pay that second again at every take, so after a deadlock it commits
// its groups whole for a while (partsOffAfterDeadlock).
//
// The outside transaction only fixes an interleaving the parts'
// concurrency allows anyway: part 1 (p000..p015) writes X, then, once the
// gate opens, Y; part 2 (p016..p031) writes Y, then X.
func TestReviewPartsOfOneTakeDeadlockEachOther(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE shared (k text PRIMARY KEY, n int NOT NULL DEFAULT 0);
		INSERT INTO shared (k) VALUES ('X'), ('Y'), ('G1'), ('G2')`)
	require.NoError(t, err)
	touch := func(k string) *store.SQLSink {
		s, err := store.CompileSQLSink(map[string]string{"A": `UPDATE shared SET n = n + 1 WHERE k = '` + k + `'`}, "")
		require.NoError(t, err)
		return s
	}
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n = 32
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	sinks := make([]*store.SQLSink, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 1)
	}
	sinks[0], sinks[1], sinks[2] = touch("X"), touch("G1"), touch("Y")
	sinks[16], sinks[17], sinks[18] = touch("Y"), touch("G2"), touch("X")

	gate, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = gate.Rollback(context.Background()) }()
	_, err = gate.Exec(tb.ctx, `SELECT 1 FROM shared WHERE k IN ('G1', 'G2') FOR UPDATE`)
	require.NoError(t, err)

	errs, wait := commitAll(t, tb, target, queued, reqs, sinks, nil)
	release()
	testsupport.Until(t, "each part waiting at the gate, having written its first row", time.Minute, func() bool {
		var waiting int
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting))
		return waiting == 2
	})
	opened := time.Now()
	require.NoError(t, gate.Rollback(tb.ctx))
	wait()
	took := time.Since(opened)
	for i, err := range errs {
		require.NoError(t, err, projectorName(i))
		c, ok, err := target.Load(tb.ctx, projectorName(i))
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, reqs[i].To, c.Cursor, projectorName(i))
	}
	var x, y int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT (SELECT n FROM shared WHERE k = 'X'), (SELECT n FROM shared WHERE k = 'Y')`).Scan(&x, &y))
	require.Equal(t, []int{2, 2}, []int{x, y}, "X and Y, each written by two batches once")

	// The deadlock PostgreSQL broke, as its statistics show once the
	// backend that found it flushes them (at most about ten seconds
	// later, when it has gone idle).
	var deadlocks int64
	testsupport.Until(t, "the deadlock counted in pg_stat_database", time.Minute, func() bool {
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&deadlocks))
		return deadlocks > 0
	})
	groups, singles := log.seen()
	slices.Sort(groups)
	t.Logf("groups %v, alone %d, %v from the gate opening to every answer, deadlocks %d", groups, singles, took, deadlocks)
	// Answer: a deadlock between parts costs deadlock_timeout once, its
	// batch commits alone (applied once, as checked above), and the
	// target then commits its groups whole for a while, so handlers that
	// lock shared rows in opposite orders do not pay it at every take.
	require.Equal(t, int64(1), deadlocks, "the gate makes the parts deadlock")
	require.Equal(t, 1, singles, "the batch whose statement PostgreSQL chose commits alone")
	require.Equal(t, 1, store.GroupParts(target, n), "parts stay off after a deadlock")
	fresh := store.NewTarget(tb.pool, time.Second)
	fresh.EnableGroupCommit()
	require.Equal(t, 2, store.GroupParts(fresh, n), "a target that met none still splits")

	// The same handlers again, the batches sent at once: committed whole,
	// every batch applies once more.
	var wg sync.WaitGroup
	again := make([]error, n)
	for i := range n {
		wg.Go(func() { again[i] = target.Commit(tb.ctx, batch(projectorName(i), epochs[i], 1, 1), sinks[i]) })
	}
	wg.Wait()
	for i, err := range again {
		require.NoError(t, err, projectorName(i))
	}
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT (SELECT n FROM shared WHERE k = 'X'), (SELECT n FROM shared WHERE k = 'Y')`).Scan(&x, &y))
	require.Equal(t, []int{4, 4}, []int{x, y})
}

// commitParts weighs batches by their statements, so one large batch at
// the front of a take becomes a part of its own: a "group" of one, which
// runGroups never makes of a lone batch (it would lose half its time to
// groupContext, and a lock wait would give up after a quarter), and which
// the observer reports as a grouped transaction of one batch
// (commit_transactions_total{mode="grouped"}, documented as several
// projectors' batches). groupPartMin says a part of fewer than 16 batches
// saves too little to pay for its own BEGIN and COMMIT.
func TestReviewAHeavyBatchBecomesAPartOfOne(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n = 32
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	reqs[0] = batch(projectorName(0), epochs[0], 0, 100)
	for i := 1; i < n; i++ {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 1)
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	wait()
	for i, err := range errs {
		require.NoError(t, err, projectorName(i))
		requireLanded(t, tb, target, projectorName(i), reqs[i].To, len(reqs[i].Events))
	}
	groups, singles := log.seen()
	slices.Sort(groups)
	t.Logf("groups %v, alone %d", groups, singles)
	require.Zero(t, singles)
	require.GreaterOrEqual(t, groups[0], 2, "a grouped transaction of one batch, with half of its time: %v", groups)
}
