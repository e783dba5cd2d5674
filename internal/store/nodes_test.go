package store_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// TestLockHoldersMatchANodeOnlyByPidAndBackendStart holds a projector's
// lock from a plain session and points a node row at its pid: the holder
// is that node only while the row's last heartbeat is after the session
// started, as for a live node; a row whose heartbeat predates the session
// (a dead node whose pid was reused) names nobody.
func TestLockHoldersMatchANodeOnlyByPidAndBackendStart(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	const ns = int32(-7)
	id, err := store.ProjectorID(tb.ctx, tb.pool, "p", 5*time.Second)
	require.NoError(t, err)

	ids, err := store.ProjectorIDs(tb.ctx, tb.pool, []string{"p", "unknown"}, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, map[string]int32{"p": id}, ids)
	var registered int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM projectord.projectors`).Scan(&registered))
	require.Equal(t, 1, registered, "a lookup registers nothing")

	holders, err := store.LockHolders(tb.ctx, tb.pool, ns, []int32{id}, 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, holders)

	conn, err := pgx.Connect(tb.ctx, tb.url)
	require.NoError(t, err)
	defer conn.Close(tb.ctx)
	var pid int32
	require.NoError(t, conn.QueryRow(tb.ctx, `SELECT pg_backend_pid() FROM pg_advisory_lock($1, $2)`, ns, id).Scan(&pid))
	// The same key in another namespace, and a one-key lock, are not it.
	_, err = conn.Exec(tb.ctx, `SELECT pg_advisory_lock($1, $2), pg_advisory_lock($2::bigint)`, ns+1, id)
	require.NoError(t, err)

	holders, err = store.LockHolders(tb.ctx, tb.pool, ns, []int32{id}, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, map[int32]store.LockHolder{id: {ProjectorID: id, PID: pid}}, holders, "no node row: held, by nobody known")

	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO projectord.nodes (node_id, hostname, backend_pid, version, started_at, heartbeat_at)
		VALUES ('dead', 'h', $1, 'v', now() - interval '2 hours', now() - interval '1 hour')`, pid)
	require.NoError(t, err)
	holders, err = store.LockHolders(tb.ctx, tb.pool, ns, []int32{id}, 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, holders[id].Node, "a row that heartbeated before the session started is another session's")

	_, err = tb.pool.Exec(tb.ctx, `UPDATE projectord.nodes SET heartbeat_at = now(),
		pool_backends = ARRAY[ROW(5, '2026-01-02T03:04:05.000006Z')::projectord.node_backend]`)
	require.NoError(t, err)
	holders, err = store.LockHolders(tb.ctx, tb.pool, ns, []int32{id}, 5*time.Second)
	require.NoError(t, err)
	h := holders[id]
	require.Equal(t, "dead", h.Node)
	require.Equal(t, pid, h.PID)
	require.InDelta(t, 0, h.HeartbeatAge.Seconds(), 1.0)

	nodes, err := store.Nodes(tb.ctx, tb.pool, 5*time.Second)
	require.NoError(t, err)
	require.Len(t, nodes, 1)
	require.Equal(t, "dead", nodes[0].ID)
	require.Equal(t, pid, nodes[0].BackendPID)
	require.InDelta(t, 0, nodes[0].HeartbeatAge.Seconds(), 1.0)
	require.Len(t, nodes[0].PoolBackends, 1)
	require.Equal(t, int32(5), nodes[0].PoolBackends[0].PID)
	require.True(t, time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC).Equal(nodes[0].PoolBackends[0].Start))
}

// TestHorizonOwner: a pool connection is recognised by the pid and
// backend_start its node row records, whatever its application_name; by
// the default application_name of a known node otherwise; a program merely
// named like projectord, for a node that has no row, is not projectord.
func TestHorizonOwner(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	hb := start.Add(time.Minute)
	nodes := []store.Node{
		{ID: "a", BackendPID: 10, HeartbeatAt: hb, PoolBackends: []store.NodeBackend{{PID: 11, Start: start}}},
		{ID: "b", BackendPID: 20, HeartbeatAt: hb},
	}
	for _, c := range []struct {
		h          store.Horizon
		node, conn string
		ok         bool
	}{
		{store.Horizon{PID: 11, BackendStart: start, ApplicationName: "custom"}, "a", store.OwnPool, true},
		{store.Horizon{PID: 11, BackendStart: start.Add(time.Second), ApplicationName: "custom"}, "", "", false},
		{store.Horizon{PID: 10, BackendStart: start}, "a", store.OwnCoordination, true},
		{store.Horizon{PID: 10, BackendStart: hb.Add(time.Second)}, "", "", false},
		{store.Horizon{PID: 30, BackendStart: start, ApplicationName: "projectord b"}, "b", store.OwnPool, true},
		{store.Horizon{PID: 30, BackendStart: start, ApplicationName: "projectord-coord b"}, "b", store.OwnCoordination, true},
		{store.Horizon{PID: 30, BackendStart: start, ApplicationName: "projectord dev generator"}, "", "", false},
		{store.Horizon{Prepared: "gid", ApplicationName: "projectord b"}, "", "", false},
	} {
		node, conn, ok := c.h.Owner(nodes)
		require.Equal(t, []any{c.node, c.conn, c.ok}, []any{node, conn, ok}, "%+v", c.h)
	}
}
