package chaos

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestChaosKill9LeaderMidBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for round := 0; round < rounds(); round++ {
		old := e.waitLeader("p1")
		r := e.replicas[old]
		after := e.maxApplied("p1")
		fault := time.Now()
		require.NoError(t, r.cmd.Process.Signal(syscall.SIGKILL))
		<-r.done
		took := e.measureFailover("kill -9", "p1", old, after, fault, 10*time.Second)
		require.Less(t, took, 2*time.Second, "kill -9 failover target")
		e.start(r)
		e.waitReady(r)
	}
	e.finish()
}

func TestChaosFrozenLeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for round := 0; round < rounds(); round++ {
		old := e.waitLeader("p1")
		r := e.replicas[old]
		after := e.maxApplied("p1")
		fault := time.Now()
		require.NoError(t, r.cmd.Process.Signal(syscall.SIGSTOP))
		took := e.measureFailover("SIGSTOP", "p1", old, after, fault, leaseTimeout+10*time.Second)
		require.Less(t, took, leaseTimeout+5*time.Second, "freeze failover target")
		// Keep it frozen past the lease, then let it wake: it must step
		// down, and fencing must keep anything it had in flight out.
		waitFor(t, time.Minute, func() bool { return time.Since(fault) > leaseTimeout+time.Second })
		require.NoError(t, r.cmd.Process.Signal(syscall.SIGCONT))
		e.waitReady(r)
		require.NotEqual(t, old, e.leader("p1"), "the woken leader does not take its lock back")
	}
	e.finish()
}

func TestChaosPartitionedLeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for round := 0; round < rounds(); round++ {
		old := e.waitLeader("p1")
		r := e.replicas[old]
		after := e.maxApplied("p1")
		fault := time.Now()
		r.proxy.SetCut(true)
		took := e.measureFailover("partition", "p1", old, after, fault, leaseTimeout+10*time.Second)
		require.Less(t, took, leaseTimeout+5*time.Second, "partition failover target")
		r.proxy.SetCut(false)
		e.waitReady(r)
	}
	e.finish()
}

func TestChaosPostgresRestartUnderLoad(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for round := 0; round < rounds(); round++ {
		e.waitLeader("p1")
		after := e.maxApplied("p1")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		fault := time.Now()
		require.NoError(t, e.cluster.Stop(ctx))
		require.NoError(t, e.cluster.Start(ctx))
		cancel()
		e.pool.Reset()
		took := e.measureFailover("postgres restart", "p1", "", after, fault, 30*time.Second)
		t.Logf("postgres restart: first batch committed %s after the stop began", took.Round(time.Millisecond))
		for _, r := range e.replicas {
			e.waitReady(r)
		}
	}
	e.finish()
}

func TestChaosRollingRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for round := 0; round < rounds(); round++ {
		for _, node := range []string{"node-1", "node-2", "node-3"} {
			r := e.replicas[node]
			led := e.leader("p1") == node
			after := e.maxApplied("p1")
			fault := time.Now()
			require.NoError(t, r.cmd.Process.Signal(syscall.SIGTERM))
			if led {
				took := e.measureFailover("SIGTERM", "p1", node, after, fault, 10*time.Second)
				// A handover is bounded well below a failover by
				// lease_timeout. How fast it typically is (tens of ms) is a
				// speed figure: `make chaos` reports it in its table
				// (docs/benchmarks.md); a timed assertion of it would
				// fail on a loaded machine without anything being wrong.
				require.Less(t, took, 2*time.Second, "SIGTERM handover bound")
			}
			select {
			case <-r.done:
				require.NoError(t, r.err, "SIGTERM exits 0")
			case <-time.After(10 * time.Second):
				t.Fatalf("%s did not exit after SIGTERM", node)
			}
			e.start(r)
			e.waitReady(r)
		}
	}
	e.finish()
}
