package coord_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
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
	return tb.sessionWith(t, node, 100*time.Millisecond, 5*time.Second)
}

func (tb *testBundle) sessionWith(t *testing.T, node string, heartbeat, lease time.Duration, opts ...func(*coord.Config)) *coord.Session {
	t.Helper()
	cc, err := pgx.ParseConfig(tb.url)
	require.NoError(t, err)
	cc.RuntimeParams["application_name"] = "projectord-coord " + node
	cfg := coord.Config{
		ConnConfig: cc, Namespace: 42, NodeID: node, Hostname: "host", Version: "test",
		HeartbeatInterval: heartbeat, AcquireInterval: 10 * time.Second, LeaseTimeout: lease,
		TCPUserTimeout: 5 * time.Second, KeepaliveIdle: time.Second, KeepaliveInterval: time.Second, KeepaliveCount: 3,
		Logger: zaptest.NewLogger(t).Named(node),
	}
	for _, o := range opts {
		o(&cfg)
	}
	s := coord.New(cfg)
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

func TestStandbyTerminatesStalledLeader(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	// Another deployment's node "a", in another database of the cluster.
	elsewhere := pgxConnect(t, pgtest.NewDatabase(t), "projectord a")
	var elsewherePID int
	require.NoError(t, elsewhere.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&elsewherePID))
	// A heartbeats so rarely that after B's two-second lease_timeout it
	// looks frozen to B, while its own watchdog (half of an hour-long
	// lease) stays quiet: a frozen leader, as seen from the database.
	a := tb.sessionWith(t, "a", time.Hour, 2*time.Hour)
	b := tb.sessionWith(t, "b", 100*time.Millisecond, 2*time.Second)
	// A pool connection of A's, as a leader's batch would hold.
	cfg, err := pgxpool.ParseConfig(tb.url)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["application_name"] = "projectord a"
	aPool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer aPool.Close()
	aConn, err := aPool.Acquire(ctx)
	require.NoError(t, err)
	defer aConn.Release()
	var aPoolPID int
	require.NoError(t, aConn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&aPoolPID))

	la, err := a.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)
	_, err = b.TryAcquire(ctx, "p", 1)
	require.ErrorIs(t, err, coord.ErrNotLeader, "a fresh leader is left alone")
	select {
	case <-la.Done():
		t.Fatal("a fresh leader lost its lease")
	default:
	}

	start := time.Now()
	require.Eventually(t, func() bool {
		l, err := b.TryAcquire(ctx, "p", 1)
		return err == nil && l != nil
	}, 10*time.Second, 10*time.Millisecond)
	took := time.Since(start)
	require.Greater(t, took, time.Second, "not before the lease timed out")
	select {
	case <-la.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the stalled leader's lease did not end")
	}
	t.Logf("took over %s after the last heartbeat check (lease_timeout 2s)", took.Round(time.Millisecond))
	var alive int
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, aPoolPID).Scan(&alive))
	require.Zero(t, alive, "the stalled node's pool connections are terminated too")
	require.Equal(t, []bool{true}, tb.alive(t, elsewherePID), "a namesake in another database was terminated")
}

// A Stop arriving while a heartbeat is in flight must let that query finish
// (cancelling it would close the connection and lose the release NOTIFY and
// the node row's removal), then release. The heartbeat is held in flight by
// a row lock on the node's row.
func TestStopDrainsInFlightHeartbeatThenReleases(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	// A long lease keeps the held heartbeat within its own query timeout
	// (5s) however slow the machine.
	a := tb.sessionWith(t, "a", 50*time.Millisecond, time.Minute)
	b := tb.session(t, "b")
	_, err := a.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)

	tx, err := tb.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx, `SELECT 1 FROM projectord.nodes WHERE node_id = 'a' FOR UPDATE`)
	require.NoError(t, err)
	pid := int(a.PID())
	require.Eventually(t, func() bool {
		var waiting bool
		err := tb.pool.QueryRow(context.Background(), `SELECT coalesce(bool_or(wait_event_type = 'Lock'), false)
			FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&waiting)
		return err == nil && waiting
	}, 10*time.Second, 5*time.Millisecond, "a's heartbeat never blocked on the node row")

	listener, err := pgx.Connect(ctx, tb.url)
	require.NoError(t, err)
	defer listener.Close(context.Background())
	_, err = listener.Exec(ctx, "LISTEN "+coord.ReleaseChannel)
	require.NoError(t, err)

	stopped := make(chan struct{})
	go func() { a.Stop(); close(stopped) }()
	select {
	case <-coord.StopSignalled(a):
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not signal the session")
	}
	require.NoError(t, tx.Rollback(ctx))

	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("Stop did not return")
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	note, err := listener.WaitForNotification(wctx)
	require.NoError(t, err, "no release NOTIFY was sent")
	require.Equal(t, "p", note.Payload)
	var n int
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT count(*) FROM projectord.nodes WHERE node_id = 'a'`).Scan(&n))
	require.Zero(t, n, "the stopped node's row is removed")
	_, err = b.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)
}

// alive reports whether each pid is a live backend.
func (tb *testBundle) alive(t *testing.T, pids ...int) []bool {
	t.Helper()
	out := make([]bool, len(pids))
	for i, pid := range pids {
		var n int
		require.NoError(t, tb.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n))
		out[i] = n == 1
	}
	return out
}

// A stalled leader whose pool connections carry the operator's own
// application_name, one of them inside a transaction holding a row lock:
// takeover terminates every one of its sessions (they are registered in its
// node row by pid and backend_start), the successor acquires and can write
// the row, and an unrelated backend, with the same application_name and a
// pid that looks reused in the node row, survives.
func TestTakeoverReachesEveryPoolSessionOfAStalledNode(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	_, err := tb.pool.Exec(ctx, `CREATE TABLE model (id int PRIMARY KEY, v int NOT NULL); INSERT INTO model VALUES (1, 0)`)
	require.NoError(t, err)

	// A heartbeats so rarely that after B's two-second lease_timeout it
	// looks frozen to B, while its own watchdog stays quiet. Its id is so
	// long that "projectord <id>" just fills the 63 bytes PostgreSQL keeps
	// of an application_name.
	node := strings.Repeat("n", 52)
	reg := coord.NewPoolBackends()
	a := tb.sessionWith(t, node, time.Hour, 2*time.Hour, func(c *coord.Config) { c.PoolBackends = reg })
	b := tb.sessionWith(t, "b", 100*time.Millisecond, 2*time.Second)

	pc, err := pgxpool.ParseConfig(tb.url)
	require.NoError(t, err)
	pc.ConnConfig.RuntimeParams["application_name"] = "myapp"
	pc.ConnConfig.RuntimeParams["tcp_keepalives_count"] = "7" // the URL's own setting wins
	reg.Install(pc, coord.Keepalives{Idle: 2 * time.Second, Interval: time.Second, Count: 3, UserTimeout: 5 * time.Second})
	aPool, err := pgxpool.NewWithConfig(ctx, pc)
	require.NoError(t, err)
	defer aPool.Close()
	c1, err := aPool.Acquire(ctx)
	require.NoError(t, err)
	defer c1.Release()
	c2, err := aPool.Acquire(ctx)
	require.NoError(t, err)
	defer c2.Release()
	var pid1, pid2 int
	require.NoError(t, c1.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid1))
	require.NoError(t, c2.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid2))
	var idle, count, userTimeout string
	require.NoError(t, c2.QueryRow(ctx, `SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_count'),
		current_setting('tcp_user_timeout')`).Scan(&idle, &count, &userTimeout))
	require.Equal(t, []string{"2", "7", "5000"}, []string{idle, count, userTimeout}, "server-side keepalives on pool connections")

	// Registered before the pool handed them out: no heartbeat ran since.
	var registered []int
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT coalesce(array_agg(b.pid ORDER BY b.pid), '{}')
		FROM projectord.nodes n, unnest(n.pool_backends) b WHERE n.node_id = $1`, node).Scan(&registered))
	require.ElementsMatch(t, []int{pid1, pid2}, registered)

	// Unrelated sessions that must survive: one with the same
	// application_name, with an entry in a's row for its pid but an older
	// backend_start (what a's row would look like had a's backend died and
	// its pid been reused); and one of another node whose longer id the
	// server truncated to a's default pool name.
	occ := pgxConnect(t, tb.url, "myapp")
	longer := pgxConnect(t, tb.url, "projectord "+node+"-2")
	var occPID, longerPID int
	require.NoError(t, occ.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&occPID))
	require.NoError(t, longer.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&longerPID))
	_, err = tb.pool.Exec(ctx, `UPDATE projectord.nodes n SET pool_backends = pool_backends ||
		ROW(a.pid, a.backend_start - interval '1 second')::projectord.node_backend
		FROM pg_stat_activity a WHERE n.node_id = $2 AND a.pid = $1`, occPID, node)
	require.NoError(t, err)

	la, err := a.TryAcquire(ctx, "p", 1)
	require.NoError(t, err)
	aPID := int(a.PID())
	tx, err := c1.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(ctx, `UPDATE model SET v = 1 WHERE id = 1`)
	require.NoError(t, err, "the stalled leader's batch holds an xid and a row lock")

	require.Eventually(t, func() bool {
		l, err := b.TryAcquire(context.Background(), "p", 1)
		return err == nil && l != nil
	}, 30*time.Second, 10*time.Millisecond, "the successor never acquired")
	select {
	case <-la.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled leader's lease did not end")
	}
	// pg_terminate_backend only signals: wait for the backends to exit.
	assert.Eventually(t, func() bool {
		var n int
		err := tb.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)`,
			[]int32{int32(aPID), int32(pid1), int32(pid2)}).Scan(&n)
		return err == nil && n == 0
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, []bool{false, false, false}, tb.alive(t, aPID, pid1, pid2),
		"sessions of the stalled node alive (coordination, pool in a transaction, idle pool)")
	require.Equal(t, []bool{true, true}, tb.alive(t, occPID, longerPID),
		"unrelated backends terminated (reused pid, truncated name)")
	require.NoError(t, occ.Ping(ctx))

	// The row lock went with the stalled node's transaction.
	wtx, err := tb.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = wtx.Rollback(context.Background()) }()
	_, err = wtx.Exec(ctx, `SET LOCAL lock_timeout = '10s'`)
	require.NoError(t, err)
	_, err = wtx.Exec(ctx, `UPDATE model SET v = 2 WHERE id = 1`)
	require.NoError(t, err, "the successor can write the row")
	require.NoError(t, wtx.Commit(ctx))
}

func pgxConnect(t *testing.T, url, appName string) *pgx.Conn {
	t.Helper()
	cc, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	cc.RuntimeParams["application_name"] = appName
	c, err := pgx.ConnectConfig(t.Context(), cc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}
