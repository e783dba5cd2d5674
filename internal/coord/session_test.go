package coord_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, pgtest.WithTemplate(func(ctx context.Context, url string) error {
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			return err
		}
		defer pool.Close()
		_, err = store.Migrate(ctx, pool, "test")
		return err
	})))
}

type testBundle struct {
	url  string
	pool *pgxpool.Pool
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return &testBundle{url: url, pool: pool}
}

func (tb *testBundle) session(t *testing.T, node string) *coord.Session {
	t.Helper()
	cc, err := pgx.ParseConfig(tb.url)
	require.NoError(t, err)
	s := coord.New(coord.Config{
		ConnConfig: cc, Namespace: 42, NodeID: node, Hostname: "host", Version: "test",
		HeartbeatInterval: 100 * time.Millisecond, AcquireInterval: 10 * time.Second, LeaseTimeout: 5 * time.Second,
		TCPUserTimeout: 5 * time.Second, KeepaliveIdle: time.Second, KeepaliveInterval: time.Second, KeepaliveCount: 3,
		Logger: zaptest.NewLogger(t).Named(node),
	})
	require.NoError(t, s.Start(t.Context()))
	t.Cleanup(s.Stop)
	require.Eventually(t, s.Up, 10*time.Second, time.Millisecond)
	return s
}

func TestLockIsExclusiveAndReleaseWakesStandby(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a, b := tb.session(t, "a"), tb.session(t, "b")
	ctx := t.Context()

	la, err := a.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)
	_, err = b.TryAcquire(ctx, "p", 1)
	require.ErrorIs(t, err, coord.ErrNotLeader)
	_, err = a.TryAcquire(ctx, "p", 1)
	require.Error(t, err, "a held lock is never taken again: locks stack")

	// The acquire interval is 10s: only the release NOTIFY can wake b in time.
	turn := b.Turn()
	start := time.Now()
	require.NoError(t, la.Release(ctx))
	select {
	case <-turn:
	case <-time.After(2 * time.Second):
		t.Fatal("release did not wake the standby")
	}
	lb, err := b.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)
	t.Logf("handover by release NOTIFY took %s", time.Since(start))
	require.ErrorIs(t, la.Err(), coord.ErrReleased)
	select {
	case <-lb.Done():
		t.Fatal("b's lease ended")
	default:
	}
}

func TestManyConcurrentAcquiresAreAnswered(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a := tb.session(t, "a")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = a.TryAcquire(t.Context(), "p", int32(i+1))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	var n int
	require.NoError(t, tb.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 42 AND pid = $1`, int(a.PID())).Scan(&n))
	require.Equal(t, 200, n)
}

func TestTerminatedSessionLosesEveryLeaseAndReconnects(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a, b := tb.session(t, "a"), tb.session(t, "b")
	ctx := t.Context()
	l1, err := a.TryAcquire(ctx, "p1", 1)
	require.NoError(t, err)
	l2, err := a.TryAcquire(ctx, "p2", 2)
	require.NoError(t, err)

	start := time.Now()
	_, err = tb.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, int(a.PID()))
	require.NoError(t, err)
	for _, l := range []*coord.Lease{l1, l2} {
		select {
		case <-l.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("lease survived its session")
		}
		require.True(t, errors.Is(l.Err(), coord.ErrSessionLost), "got %v", l.Err())
	}
	t.Logf("loss detected in %s", time.Since(start))
	_, err = b.TryAcquire(ctx, "p1", 1)
	require.NoError(t, err, "the lock died with the session")
	require.Eventually(t, a.Up, 10*time.Second, 5*time.Millisecond, "the session reconnects")
	_, err = a.TryAcquire(ctx, "p2", 2)
	require.NoError(t, err)
}

func TestStopReleasesLocksAndRemovesNode(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a, b := tb.session(t, "a"), tb.session(t, "b")
	ctx := t.Context()
	_, err := a.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)
	var hb time.Time
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT heartbeat_at FROM projectord.nodes WHERE node_id = 'a' AND backend_pid = $1`, int(a.PID())).Scan(&hb))

	turn := b.Turn()
	a.Stop()
	a.Stop() // safe twice
	<-turn
	_, err = b.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)
	var n int
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT count(*) FROM projectord.nodes WHERE node_id = 'a'`).Scan(&n))
	require.Zero(t, n)
	_, err = a.TryAcquire(ctx, "p", 1)
	require.ErrorIs(t, err, coord.ErrUnavailable)
}

func TestHeartbeatRefreshesNodeRow(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a := tb.session(t, "a")
	var first time.Time
	require.NoError(t, tb.pool.QueryRow(t.Context(), `SELECT heartbeat_at FROM projectord.nodes WHERE node_id = 'a'`).Scan(&first))
	require.Eventually(t, func() bool {
		var hb time.Time
		err := tb.pool.QueryRow(t.Context(), `SELECT heartbeat_at FROM projectord.nodes WHERE node_id = 'a'`).Scan(&hb)
		return err == nil && hb.After(first)
	}, 5*time.Second, 10*time.Millisecond)
	require.True(t, a.Up())
}
