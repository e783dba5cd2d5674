package daemon

import (
	"context"
	"net"
	neturl "net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
)

// stopWithin stops d with the given budget and fails the test if Stop has
// not returned after `limit`.
func stopWithin(t *testing.T, d *Daemon, budget, limit time.Duration) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	done := make(chan struct{})
	start := time.Now()
	go func() { d.Stop(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("Stop did not return within %s", limit)
	}
	return time.Since(start)
}

// TestStopWhileBootstrapHangs: a Stop while the bootstrap waits on a
// server that accepted its connection and never answers (a hung server, a
// cut network) returns within its budget, leaves no pool and no goroutine,
// and is a controlled stop.
//
// Not parallel: goleak.
func TestStopWhileBootstrapHangs(t *testing.T) {
	tb := setupPG(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	before := goleak.IgnoreCurrent()
	u, err := neturl.Parse(tb.url)
	require.NoError(t, err)
	u.Host = ln.Addr().String()
	cfg := tb.config(t, config.Projector{Name: "p"})
	c := *cfg
	c.Database.URL = u.String()
	c.Database.ConnectTimeout = time.Minute
	c.Database.QueryTimeout = time.Minute
	c.Coordination.NodeID = "node-hang"
	d := New(Options{Config: &c, Logger: tb.log.Named("hang"), Version: "test", Migrate: true})
	require.NoError(t, d.Start(tb.ctx))
	var conn net.Conn
	select {
	case conn = <-accepted: // the bootstrap is connecting, and waits
	case <-time.After(30 * time.Second):
		t.Fatal("the bootstrap never connected")
	}
	took := stopWithin(t, d, 200*time.Millisecond, 20*time.Second)
	require.Less(t, took, 10*time.Second, "Stop waited for the hung connect")
	require.ErrorIs(t, d.Cause(), ErrStopped)
	require.Empty(t, d.Pools())
	goleak.VerifyNone(t, before)
	conn.Close()
	require.NoError(t, ln.Close())
}

// TestStopAtEveryStepOfTheBootstrap: Stop right after Start, after the
// first pool is open, and once the supervisors run: every time, Stop
// returns, nothing is left, and the cause is ErrStopped.
//
// Not parallel: goleak.
func TestStopAtEveryStepOfTheBootstrap(t *testing.T) {
	tb := setupPG(t)
	tb.appendEvents(t, 20, 5, "A")
	cfg := tb.config(t, config.Projector{Name: "p"})
	for _, tc := range []struct {
		name string
		at   func(d *Daemon) bool
	}{
		{"at once", func(*Daemon) bool { return true }},
		{"a pool open", func(d *Daemon) bool { return len(d.Pools()) > 0 }},
		{"backend up", func(d *Daemon) bool { return d.Backend() != nil }},
		{"leading", func(d *Daemon) bool { return d.States()["p"] == runner.StateLeader }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			c := *cfg
			c.Coordination.NodeID = "node-" + tc.name
			d := New(Options{Config: &c, Logger: tb.log.Named("step"), Version: "test", Migrate: true})
			require.NoError(t, d.Start(tb.ctx))
			require.Eventually(t, func() bool { return tc.at(d) }, 30*time.Second, time.Millisecond)
			// Twice and concurrently, with budgets apart.
			var wg sync.WaitGroup
			for _, budget := range []time.Duration{time.Millisecond, 10 * time.Second} {
				wg.Go(func() { stopWithin(t, d, budget, 20*time.Second) })
			}
			wg.Wait()
			require.ErrorIs(t, d.Cause(), ErrStopped)
			require.Empty(t, d.Pools())
			goleak.VerifyNone(t, before)
		})
	}
	var dup int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM (SELECT position FROM applied GROUP BY position HAVING count(*) > 1) d`).Scan(&dup))
	require.Zero(t, dup, "events applied twice")
}

// TestStopWithoutStart: a daemon never started stops at once, as a
// controlled stop, and holds nothing.
func TestStopWithoutStart(t *testing.T) {
	tb := setupPG(t)
	before := goleak.IgnoreCurrent()
	cfg := tb.config(t, config.Projector{Name: "p"})
	d := New(Options{Config: cfg, Logger: tb.log, Version: "test"})
	stopWithin(t, d, time.Second, 5*time.Second)
	stopWithin(t, d, time.Second, 5*time.Second)
	select {
	case <-d.Done():
	default:
		t.Fatal("Done is not closed after Stop")
	}
	require.ErrorIs(t, d.Cause(), ErrStopped)
	require.Empty(t, d.Pools())
	goleak.VerifyNone(t, before)
}
