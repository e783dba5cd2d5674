package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/testsupport"
)

// An idle standby's cost must not grow with its projectors: its turns are
// coalesced onto the coordination session. 100 projectors, all led by one
// replica (balance off, so the other stays standby for all of them), no
// events, default intervals: the transactions per second the standby adds
// to the database, measured over 10 s windows (the sleeps are the windows).
func TestIdleStandbyCostIsFlatInItsProjectors(t *testing.T) {
	tb := setupPG(t)
	var ps []config.Projector
	for i := range 100 {
		ps = append(ps, config.Projector{Name: fmt.Sprintf("p%03d", i)})
	}
	cfg := tb.config(t, ps...)
	d := config.Default()
	cfg.Coordination.AcquireInterval = d.Coordination.AcquireInterval
	cfg.Coordination.HeartbeatInterval = d.Coordination.HeartbeatInterval
	cfg.Coordination.LeaseTimeout = d.Coordination.LeaseTimeout
	cfg.Coordination.Balance = false
	cfg.Source.PollInterval = time.Second
	d1 := tb.startDaemon(t, cfg, "main")
	testsupport.Until(t, "main leads every projector", 60*time.Second, func() bool {
		for _, p := range ps {
			if d1.States()[p.Name] != runner.StateLeader {
				return false
			}
		}
		return true
	})
	xacts := func() int64 {
		var x int64
		require.NoError(t, tb.pool.QueryRow(context.Background(), `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()`).Scan(&x))
		return x
	}
	window := func() float64 {
		x0, t0 := xacts(), time.Now()
		time.Sleep(8 * time.Second) // the measurement window
		return float64(xacts()-x0) / time.Since(t0).Seconds()
	}
	first := window()
	alone := window()
	d2 := tb.startDaemon(t, cfg, "standby")
	testsupport.Until(t, "the standby up for every projector", 60*time.Second, func() bool {
		for _, p := range ps {
			if d2.States()[p.Name] != runner.StateStandby {
				return false
			}
		}
		return true
	})
	window()
	both := window()
	t.Logf("transactions per second: main alone %.1f (first window %.1f), main and an idle standby %.1f: the standby adds %.1f", alone, first, both, both-alone)
	require.Less(t, both-alone, 20.0, "an idle standby's queries grow with its projectors")
}
