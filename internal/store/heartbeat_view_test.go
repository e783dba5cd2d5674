package store_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// TestHeartbeatViewNamesLiveNodesAndEveryHolder: one heartbeat reads
// which other nodes are alive (a fresh heartbeat and a connected
// coordination backend) and who holds every lock of the namespace. A node
// whose backend is gone (killed) is not alive although its row is fresh;
// one whose row is stale (frozen past lease_timeout) is not alive although
// its backend is; a row naming a pid that another, newer session now has
// is not that session's node.
func TestHeartbeatViewNamesLiveNodesAndEveryHolder(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const ns = int32(77)
	const lease = 10 * time.Second
	connect := func() (*pgx.Conn, int32) {
		c, err := pgx.Connect(tb.ctx, tb.url)
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close(tb.ctx) })
		var pid int32
		require.NoError(t, c.QueryRow(tb.ctx, `SELECT pg_backend_pid()`).Scan(&pid))
		return c, pid
	}
	self, selfPID := connect()
	alive, alivePID := connect()
	frozen, frozenPID := connect()
	killed, killedPID := connect()
	reused, reusedPID := connect()
	for _, n := range []struct {
		node string
		pid  int32
		hb   string
	}{
		{"alive", alivePID, "now()"},
		{"frozen", frozenPID, "now() - interval '11 seconds'"},
		{"killed", killedPID, "now()"},
		// Fresh, but from just before the session that now has its pid
		// started: a dead node whose pid went to another session.
		{"reused", reusedPID, "(SELECT backend_start FROM pg_stat_activity WHERE pid = $2) - interval '1 millisecond'"},
	} {
		_, err := tb.pool.Exec(tb.ctx, `INSERT INTO projectord.nodes (node_id, hostname, backend_pid, version, started_at, heartbeat_at)
			VALUES ($1, 'h', $2, 'v', now() - interval '2 hours', `+n.hb+`)`, n.node, n.pid)
		require.NoError(t, err)
	}
	lock := func(c *pgx.Conn, ids ...int32) {
		for _, id := range ids {
			_, err := c.Exec(tb.ctx, `SELECT pg_advisory_lock($1, $2)`, ns, id)
			require.NoError(t, err)
		}
	}
	lock(self, 1, 2)
	lock(alive, 3)
	lock(frozen, 4)
	lock(reused, 5)
	// Another namespace and a one-key lock are not the namespace's.
	_, err := alive.Exec(tb.ctx, `SELECT pg_advisory_lock($1, 6), pg_advisory_lock(7)`, ns+1)
	require.NoError(t, err)
	require.NoError(t, killed.Close(tb.ctx))
	// The killed backend leaves pg_stat_activity once it has exited.
	require.Eventually(t, func() bool {
		var n int
		_ = tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, killedPID).Scan(&n)
		return n == 0
	}, 10*time.Second, 5*time.Millisecond)

	h, err := store.HeartbeatView(tb.ctx, self, ns, store.NodeRow{NodeID: "self", Hostname: "h", Version: "v"}, lease)
	require.NoError(t, err)
	require.Equal(t, uint32(selfPID), h.PID)
	require.ElementsMatch(t, []int64{1, 2}, h.Granted)
	require.Equal(t, []store.NodeSession{{Node: "alive", PID: alivePID}}, h.Members,
		"only the node with a fresh row and its own connected backend is alive")
	require.Equal(t, []store.LockSession{{ID: 1, PID: selfPID}, {ID: 2, PID: selfPID}, {ID: 3, PID: alivePID},
		{ID: 4, PID: frozenPID}, {ID: 5, PID: reusedPID}}, h.Holders, "every holder of the namespace, known or not")

	var hb time.Time
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT heartbeat_at FROM projectord.nodes WHERE node_id = 'self'`).Scan(&hb))
	require.False(t, hb.IsZero(), "the heartbeat wrote this node's row")
}
