package coord_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/projectord/projectord/internal/coord"
)

// A session coming up removes the rows of nodes silent for longer than the
// expiry whose coordination backend is gone (no backend with their pid, or
// one started after their last heartbeat: a reused pid), and keeps a row
// younger than the expiry, a row older than it whose backend still lives
// (takeover needs it), and its own row. It logs which rows it removed.
func TestSessionExpiresRowsOfDeadNodes(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	const expiry = 6 * time.Second

	// A backend that has lived longer than the expiry.
	alive := pgxConnect(t, tb.url, "projectord-coord old-but-alive")
	var alivePID int
	require.NoError(t, alive.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&alivePID))
	// A backend that is gone.
	gone := pgxConnect(t, tb.url, "projectord-coord gone")
	var gonePID int
	require.NoError(t, gone.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&gonePID))
	require.NoError(t, gone.Close(ctx))
	// A backend newer than the heartbeat of a row that names its pid.
	newer := pgxConnect(t, tb.url, "unrelated")
	var newerPID int
	require.NoError(t, newer.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&newerPID))
	require.Eventually(t, func() bool {
		var ok bool
		err := tb.pool.QueryRow(ctx, `SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)
			AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $2 AND backend_start < now() - make_interval(secs => $3))`,
			gonePID, alivePID, (expiry + time.Second).Seconds()).Scan(&ok)
		return err == nil && ok
	}, 60*time.Second, 20*time.Millisecond)

	_, err := tb.pool.Exec(ctx, `INSERT INTO projectord.nodes (node_id, hostname, backend_pid, version, started_at, heartbeat_at)
		SELECT 'dead-old', 'h', $1::int4, 'v', now() - interval '2 hours', now() - interval '1 hour'
		UNION ALL SELECT 'reused-pid', 'h', $2::int4, 'v', backend_start - interval '2 hours', backend_start - interval '1 hour'
			FROM pg_stat_activity WHERE pid = $2::int4
		UNION ALL SELECT 'dead-young', 'h', $1, 'v', now(), now()
		UNION ALL SELECT 'old-but-alive', 'h', $3::int4, 'v', backend_start, backend_start + interval '1 millisecond'
			FROM pg_stat_activity WHERE pid = $3::int4
		UNION ALL SELECT 'a', 'h', $1, 'v', now() - interval '2 hours', now() - interval '1 hour'`,
		gonePID, newerPID, alivePID)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "dead-old", "dead-young", "old-but-alive", "reused-pid"}, nodeIDs(t, tb))

	core, logs := observer.New(zapcore.InfoLevel)
	start := time.Now()
	s := tb.sessionWith(t, "a", 100*time.Millisecond, 3*time.Second, func(c *coord.Config) {
		c.NodeExpiry = expiry
		c.Logger = zap.New(core)
	})
	require.Eventually(t, func() bool { return len(nodeIDs(t, tb)) == 3 }, 30*time.Second, 10*time.Millisecond,
		"the dead nodes' rows were not removed")
	t.Logf("expired rows removed %s after the session started", time.Since(start).Round(time.Millisecond))
	require.Equal(t, []string{"a", "dead-young", "old-but-alive"}, nodeIDs(t, tb))

	// The young row was still young when the rows were removed, so its
	// staying means something.
	var young bool
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT now() - heartbeat_at < make_interval(secs => $1)
		FROM projectord.nodes WHERE node_id = 'dead-young'`, expiry.Seconds()).Scan(&young))
	require.True(t, young, "the machine was too slow for this test: the young row aged past the expiry")
	var ownPID int
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT backend_pid FROM projectord.nodes WHERE node_id = 'a'`).Scan(&ownPID))
	require.Equal(t, int(s.PID()), ownPID)

	removed := logs.FilterMessage("removed the rows of dead nodes").All()
	require.Len(t, removed, 1)
	fields := removed[0].ContextMap()
	require.EqualValues(t, 2, fields["rows"])
	require.ElementsMatch(t, []any{"dead-old", "reused-pid"}, fields["nodes"])
	require.NoError(t, alive.Ping(context.Background()), "the live backend is left alone")
}

// Without an expiry (0), no row is removed.
func TestNoExpiryKeepsEveryRow(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ctx := t.Context()
	_, err := tb.pool.Exec(ctx, `INSERT INTO projectord.nodes (node_id, hostname, backend_pid, version, started_at, heartbeat_at)
		VALUES ('dead-old', 'h', NULL, 'v', now() - interval '2 hours', now() - interval '1 hour')`)
	require.NoError(t, err)
	s := tb.session(t, "a")
	hb := func() time.Time {
		var at time.Time
		require.NoError(t, tb.pool.QueryRow(ctx, `SELECT heartbeat_at FROM projectord.nodes WHERE node_id = 'a'`).Scan(&at))
		return at
	}
	first := hb()
	// Several heartbeats later, past the point where an expiry would run.
	require.Eventually(t, func() bool { return hb().After(first.Add(300 * time.Millisecond)) }, 30*time.Second, 10*time.Millisecond)
	require.True(t, s.Up())
	require.Equal(t, []string{"a", "dead-old"}, nodeIDs(t, tb))
}

func nodeIDs(t *testing.T, tb *testBundle) []string {
	t.Helper()
	var ids []string
	require.NoError(t, tb.pool.QueryRow(t.Context(), `SELECT coalesce(array_agg(node_id ORDER BY node_id), '{}') FROM projectord.nodes`).Scan(&ids))
	return ids
}
