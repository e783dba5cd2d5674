package runner_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/balance"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/testsupport"
)

// handLease is a lease whose end the test hands to its watcher: done is
// unbuffered, so a send returns once the watcher has taken it.
type handLease struct{ done chan struct{} }

func (l *handLease) Done() <-chan struct{}         { return l.done }
func (l *handLease) Err() error                    { return nil }
func (l *handLease) Release(context.Context) error { return nil }

// watchers counts the goroutines Balance.TryAcquire started (its lease
// watchers) that have not returned.
func watchers() int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "created by github.com/projectord/projectord/internal/runner.(*Balance).TryAcquire")
}

// TestBalanceOffReacquireKeepsStatus: with balancing off, a standby may
// win the lock again before the watcher of its previous lease has run
// (nothing gates the try). That late watcher must not end the new
// leadership: /status's balance would say this replica leads nothing
// while it leads the projector, until it next wins the lock. Not
// parallel: it counts watcher goroutines.
func TestBalanceOffReacquireKeepsStatus(t *testing.T) {
	g := runner.NewBalance(runner.BalanceConfig{Node: "a", Weights: map[string]int{"p": 1}})
	g.Observe(balance.View{Members: []balance.Member{{Node: "a", Session: 1}}, Holders: map[string]string{}})
	leads := func() []string {
		st := g.Status()
		require.NotNil(t, st)
		require.Len(t, st.Nodes, 1)
		return st.Nodes[0].Leads
	}

	first := &handLease{done: make(chan struct{})}
	_, err := g.TryAcquire(context.Background(), "p", func(context.Context) (runner.Lease, error) { return first, nil })
	require.NoError(t, err)
	// The first leadership ends, and the standby wins the lock again
	// before the first watcher is scheduled.
	second := &handLease{done: make(chan struct{})}
	_, err = g.TryAcquire(context.Background(), "p", func(context.Context) (runner.Lease, error) { return second, nil })
	require.NoError(t, err)
	n := watchers()
	first.done <- struct{}{}
	testsupport.Until(t, "the first lease's watcher returned", time.Minute, func() bool { return watchers() < n })
	require.Equal(t, []string{"p"}, leads(), "this replica leads p on its second lease")

	second.done <- struct{}{}
	testsupport.Until(t, "the second lease's watcher returned", time.Minute, func() bool { return watchers() < n-1 })
	require.Empty(t, leads(), "its leadership ended")
}
