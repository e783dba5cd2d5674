package coord_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/coord"
)

// losses records what OnSessionLost reports.
type losses struct {
	mu      sync.Mutex
	reasons []string
}

func (l *losses) record(reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reasons = append(l.reasons, reason)
}

func (l *losses) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reasons)
}

func (l *losses) option(c *coord.Config) { c.OnSessionLost = l.record }

// upWithNewPID waits until s is up on a backend other than old's.
func upWithNewPID(t *testing.T, s *coord.Session, old uint32) uint32 {
	t.Helper()
	var pid uint32
	require.Eventually(t, func() bool {
		pid = s.PID()
		return s.Up() && pid != 0 && pid != old
	}, 30*time.Second, 5*time.Millisecond, "the session did not come back up")
	return pid
}

// Every termination of the coordination backend is one loss, reason
// "connection", whatever the session was doing when it came (waiting for
// notifications, or in a heartbeat: the interval is short); a stop is none.
// Before, only failed heartbeat queries were counted, so most of these went
// unseen.
func TestEveryTerminatedSessionIsCountedOnce(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	var l losses
	s := tb.sessionWith(t, "a", 20*time.Millisecond, 5*time.Second, l.option)
	lease, err := s.TryAcquire(t.Context(), "p", 1)
	require.NoError(t, err)

	const kills = 5
	pid := s.PID()
	for i := range kills {
		var ok bool
		require.NoError(t, tb.pool.QueryRow(t.Context(), `SELECT pg_terminate_backend($1)`, int(pid)).Scan(&ok))
		require.True(t, ok)
		pid = upWithNewPID(t, s, pid)
		require.Eventually(t, func() bool { return len(l.get()) >= i+1 }, 10*time.Second, 5*time.Millisecond)
		require.Len(t, l.get(), i+1, "kill %d", i+1)
	}
	select {
	case <-lease.Done():
		require.ErrorIs(t, lease.Err(), coord.ErrSessionLost)
	default:
		t.Fatal("the lease outlived its session")
	}
	s.Stop()
	require.Equal(t, slices.Repeat([]string{coord.LostConnection}, kills), l.get(), "a stop is not a loss")
}

// A heartbeat that does not answer within its deadline (lease_timeout/3: it
// waits for a row lock on the node's row) and a heartbeat the server refuses
// (a trigger raising an error, on a connection that stays open) are each one
// loss, reason "heartbeat".
func TestFailedHeartbeatsAreCountedAsHeartbeat(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	var l losses
	// The default lease: the heartbeat's deadline is 5s, the stall bound
	// 7.5s, so the heartbeat's own failure comes first however slow the
	// machine.
	s := tb.sessionWith(t, "a", 100*time.Millisecond, 15*time.Second, l.option)
	pid := s.PID()

	tx, err := tb.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx, `SELECT 1 FROM projectord.nodes WHERE node_id = 'a' FOR UPDATE`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(l.get()) == 1 }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{coord.LostHeartbeat}, l.get())
	require.False(t, s.Up())
	// The reconnecting session waits for the same row; let it through.
	require.NoError(t, tx.Rollback(ctx))
	pid = upWithNewPID(t, s, pid)

	_, err = tb.pool.Exec(ctx, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN RAISE EXCEPTION 'heartbeat refused by the test'; END $$;
		CREATE TRIGGER refuse BEFORE UPDATE ON projectord.nodes FOR EACH ROW WHEN (NEW.node_id = 'a') EXECUTE FUNCTION refuse()`)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(l.get()) == 2 }, 30*time.Second, 10*time.Millisecond)
	require.Equal(t, []string{coord.LostHeartbeat, coord.LostHeartbeat}, l.get())
	_, err = tb.pool.Exec(ctx, `DROP TRIGGER refuse ON projectord.nodes`)
	require.NoError(t, err)
	upWithNewPID(t, s, pid)
	s.Stop()
	require.Len(t, l.get(), 2, "reconnecting and stopping are not losses")
}

// A session goroutine held up past lease_timeout/2 (here by an OnNotify
// callback that blocks, as a frozen process would) gives up its session on
// waking, reason "stalled", although its connection is fine.
func TestStalledSessionIsCountedAsStalled(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	var l losses
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	s := tb.sessionWith(t, "a", 50*time.Millisecond, 2*time.Second, l.option, func(c *coord.Config) {
		c.Listen = []string{"stall_test"}
		c.OnNotify = func(string, string) {
			blocked <- struct{}{}
			<-release
		}
	})
	unfreeze := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unfreeze) // before Stop, which waits for the session goroutine
	pid := s.PID()
	_, err := tb.pool.Exec(ctx, `NOTIFY stall_test`)
	require.NoError(t, err)
	<-blocked
	// Frozen until the node row shows no heartbeat for more than half the
	// lease.
	require.Eventually(t, func() bool {
		var stale bool
		err := tb.pool.QueryRow(ctx, `SELECT now() - heartbeat_at > interval '1.5s' FROM projectord.nodes WHERE node_id = 'a'`).Scan(&stale)
		return err == nil && stale
	}, 30*time.Second, 10*time.Millisecond)
	unfreeze()
	upWithNewPID(t, s, pid)
	require.Equal(t, []string{coord.LostStalled}, l.get())
}
