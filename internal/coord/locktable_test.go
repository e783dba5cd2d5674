package coord_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgcluster"
)

// TestFullLockTablePausesAcquisitions runs on a cluster of its own with a
// small lock table, filled by another session: filling the shared test
// cluster's would fail every other test. An acquisition that meets "out of
// shared memory" keeps the session up with the leases it holds, takes no
// lock (a statement that fails part-way keeps the session locks it took),
// and pauses further acquisitions instead of retrying at once; once the
// table has room, acquiring works again.
func TestFullLockTablePausesAcquisitions(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{
		"max_locks_per_transaction": "10", "max_connections": "20",
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	url := cl.URL("postgres")
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = store.Migrate(ctx, pool, "test")
	require.NoError(t, err)

	cc, err := pgx.ParseConfig(url)
	require.NoError(t, err)
	s := coord.New(coord.Config{
		ConnConfig: cc, Namespace: 42, NodeID: "n1", Hostname: "host", Version: "test",
		HeartbeatInterval: 100 * time.Millisecond, AcquireInterval: 10 * time.Second, LeaseTimeout: 30 * time.Second,
		TCPUserTimeout: 5 * time.Second, KeepaliveIdle: time.Second, KeepaliveInterval: time.Second, KeepaliveCount: 3,
		Logger: zaptest.NewLogger(t),
	})
	require.NoError(t, s.Start(ctx))
	t.Cleanup(s.Stop)
	require.Eventually(t, s.Up, 10*time.Second, time.Millisecond)
	held, err := s.TryAcquire(ctx, "held", 1)
	require.NoError(t, err)
	pid := s.PID()

	// The session is kept busy by a heartbeat waiting for the node row,
	// which already holds the locks it needs, while the table fills and
	// while every wanted lock queues: the session serves what queued
	// while it was busy in one statement.
	holder, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.WithoutCancel(ctx)) }()
	_, err = holder.Exec(ctx, `SELECT 1 FROM projectord.nodes WHERE node_id = 'n1' FOR UPDATE`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var waiting bool
		return pool.QueryRow(ctx, `SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1`, int32(pid)).Scan(&waiting) == nil && waiting
	}, 10*time.Second, 5*time.Millisecond, "the heartbeat waits for the row")

	// The filler takes advisory locks until the table is full (session
	// locks outlive the failed statement), then frees a little room, so
	// the session's next transactions (each takes its transaction id
	// lock) fit, but not all the wanted locks.
	filler, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = filler.Close(context.WithoutCancel(ctx)) })
	_, err = filler.Exec(ctx, `SELECT count(pg_advisory_lock(7, g)) FROM generate_series(1, 1000000) g`)
	require.ErrorContains(t, err, "out of shared memory")
	_, err = filler.Exec(ctx, `SELECT pg_advisory_unlock(7, g) FROM generate_series(1, 10) g`)
	require.NoError(t, err)

	const wanted = 24
	errs := make(chan error, wanted)
	for id := range int32(wanted) {
		go func() {
			_, err := s.TryAcquire(ctx, "p", 100+id)
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return s.Queued() == wanted }, 10*time.Second, time.Millisecond)
	require.NoError(t, holder.Commit(ctx))
	for range wanted {
		err := <-errs
		require.ErrorIs(t, err, coord.ErrUnavailable)
		require.ErrorContains(t, err, "out of shared memory")
	}
	_, err = s.TryAcquire(ctx, "p", 100)
	require.ErrorIs(t, err, coord.ErrUnavailable)
	require.ErrorContains(t, err, "paused", "the next attempt waits instead of asking the server")
	require.True(t, s.Up(), "the session stays up")
	require.Equal(t, pid, s.PID(), "on the same backend")
	require.NoError(t, held.Err(), "and keeps its leases")
	var stray int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $1 AND classid = 42 AND objid <> 1`,
		int32(pid)).Scan(&stray))
	require.Zero(t, stray, "no lock is held without a lease")

	_, err = filler.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)
	var l *coord.Lease
	require.Eventually(t, func() bool {
		l, err = s.TryAcquire(ctx, "p", 2)
		return err == nil
	}, 30*time.Second, 50*time.Millisecond, "acquiring resumes once the table has room")
	require.NoError(t, l.Release(ctx))
}
