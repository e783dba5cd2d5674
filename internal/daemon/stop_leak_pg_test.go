package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/testsupport"
)

// TestStopPastTheBudgetLeavesNothingBehind: a Stop whose budget
// (shutdown_timeout) is shorter than a batch in flight cuts the batch
// short and still stops everything: no goroutine of the daemon, no pool, no
// connection is left, and no event of the cut batch is applied. Before, Stop
// returned at the budget leaving the supervisors, the session, the watcher,
// the refresher and every pool running.
//
// Not parallel: goleak compares against the goroutines alive at the start,
// and parallel tests start their own meanwhile.
func TestStopPastTheBudgetLeavesNothingBehind(t *testing.T) {
	tb := setupPG(t)
	tb.appendEvents(t, 5, 1, "A")
	before := goleak.IgnoreCurrent()
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE slow (n bigint)`)
	require.NoError(t, err)
	cfg := tb.config(t, config.Projector{Name: "hung",
		Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": "INSERT INTO slow SELECT @position FROM pg_sleep(30)"}}}})
	c := *cfg
	c.Coordination.NodeID = "node-hung"
	d := New(Options{Config: &c, Logger: tb.log.Named("hung"), Version: "test", Migrate: true})
	require.NoError(t, d.Start(tb.ctx))
	// The batch is in flight: its first statement sleeps on the server.
	require.Eventually(t, func() bool {
		var n int
		return tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'projectord node-hung' AND query LIKE '%pg_sleep(30)%' AND state = 'active'`).Scan(&n) == nil && n == 1
	}, 30*time.Second, 5*time.Millisecond)
	pools := d.Pools()
	require.NotEmpty(t, pools)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	d.Stop(ctx)
	took := time.Since(start)
	require.ErrorIs(t, d.Cause(), ErrStopped, "a controlled stop is told apart from a failure")
	d.Stop(ctx) // safe twice
	require.Less(t, took, 15*time.Second, "Stop waited for the 30 s batch")
	require.Empty(t, d.Pools(), "every pool is closed")
	// A connection the pool was still opening when it closed is closed by
	// the pool once it is established, after Close returned (pgxpool
	// counts it until then): within a bound, none is left, in the pool or
	// on the server.
	for name, p := range pools {
		testsupport.Until(t, "pool "+name+" has no connection left", 10*time.Second, func() bool { return p.Stat().TotalConns() == 0 })
	}
	testsupport.Until(t, "no session of the stopped daemon on the server", 10*time.Second, func() bool {
		var n int
		return tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'projectord%node-hung'`).Scan(&n) == nil && n == 0
	})
	goleak.VerifyNone(t, before)
	var applied int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM slow`).Scan(&applied))
	require.Zero(t, applied, "the cut batch did not commit")
	t.Logf("Stop took %s with a 200ms budget and a 30s batch in flight", took.Round(time.Millisecond))
}
