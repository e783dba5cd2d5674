package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// Second review of parts: noteDeadlock recognises only SQLSTATE 40P01,
// the error of a deadlock PostgreSQL's detector broke. The detector runs
// only after deadlock_timeout (1 s by default), but a group's lock waits
// are bounded by lock_timeout, a quarter of the group's time (beginSQL:
// half of groupContext's half). With database.query_timeout below 4 s
// (allowed down to 100 ms), or a deadlock_timeout raised above the
// group's lock_timeout, the same deadlock between two parts is broken by
// lock_timeout instead: SQLSTATE 55P03, blamable, so one batch goes alone
// and the rest round again, exactly as after a 40P01, yet parts stay on
// and every take pays the wait again.
//
// The test raises deadlock_timeout on the parts' connections rather than
// shortening the target's timeout, so that the gate below is not itself
// timed out by lock_timeout while the test observes both parts waiting:
// the relation that matters, lock_timeout < deadlock_timeout, is the
// same as with query_timeout = 2s and the default deadlock_timeout.
func TestReviewPartsStayOnAfterADeadlockBrokenByLockTimeout(t *testing.T) {
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
	cfg, err := pgxpool.ParseConfig(tb.url)
	require.NoError(t, err)
	cfg.MaxConns = 4 // two parts per take of 32
	cfg.ConnConfig.RuntimeParams["deadlock_timeout"] = "10min"
	pool, err := pgxpool.NewWithConfig(tb.ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	// 30 s: groups of 15 s, lock_timeout 7.5 s, well below deadlock_timeout.
	target := store.NewTarget(pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n = 32
	require.Equal(t, 2, store.GroupParts(target, n), "the scenario needs two parts")
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	sinks := make([]*store.SQLSink, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 1)
	}
	// Part 1 (p000..p015) writes X, waits at G1, then writes Y; part 2
	// (p016..p031) writes Y, waits at G2, then writes X.
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
	require.NoError(t, gate.Rollback(tb.ctx))
	wait()
	for i, err := range errs {
		require.NoError(t, err, projectorName(i))
	}
	var x, y int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT (SELECT n FROM shared WHERE k = 'X'), (SELECT n FROM shared WHERE k = 'Y')`).Scan(&x, &y))
	require.Equal(t, []int{2, 2}, []int{x, y}, "X and Y, each written by two batches once")
	_, singles := log.seen()
	require.NotZero(t, singles, "the parts locked each other and one batch, at least, went alone")

	require.Equal(t, 1, store.GroupParts(target, n),
		"the parts deadlocked (broken by lock_timeout, SQLSTATE 55P03, not 40P01), yet parts stay on")
}
