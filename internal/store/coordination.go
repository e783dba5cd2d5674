package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The coordination session's statements on projectord.nodes (package coord
// runs them on its own connection). A node row says which backend holds a
// replica's advisory locks and which pool backends it opened, so a standby
// can take over from it when it stalls.

// NodeRow is what a replica's coordination session writes in its row.
type NodeRow struct {
	NodeID, Hostname, Version string
	// PoolPIDs and PoolStarts are the pid and backend_start of every pool
	// connection the replica opened, pairwise.
	PoolPIDs   []int32
	PoolStarts []time.Time
}

// poolBackendsSQL builds the node row's pool_backends from the parameters
// $4 (pids) and $5 (backend_starts).
const poolBackendsSQL = `ARRAY(SELECT ROW(p, b)::projectord.node_backend FROM unnest($4::int4[], $5::timestamptz[]) AS u(p, b))`

// RegisterNode writes n's row for the session of conn (its backend pid),
// heartbeating it now.
func RegisterNode(ctx context.Context, conn *pgx.Conn, n NodeRow) error {
	_, err := conn.Exec(ctx, `INSERT INTO projectord.nodes (node_id, hostname, backend_pid, version, started_at, heartbeat_at, pool_backends)
		VALUES ($1, $2, pg_backend_pid(), $3, now(), now(), `+poolBackendsSQL+`)
		ON CONFLICT (node_id) DO UPDATE SET hostname = excluded.hostname, backend_pid = excluded.backend_pid,
			version = excluded.version, heartbeat_at = now(), pool_backends = excluded.pool_backends`,
		n.NodeID, n.Hostname, n.Version, n.PoolPIDs, n.PoolStarts)
	if err != nil {
		return fmt.Errorf("error registering node: %w", err)
	}
	return nil
}

// HeartbeatNode refreshes n's row (an upsert, so a row deleted by someone
// else comes back: a node without a row could never be declared stalled)
// and returns the session's backend pid and the ids of the advisory locks
// of namespace it holds, in one round trip.
func HeartbeatNode(ctx context.Context, conn *pgx.Conn, namespace int32, n NodeRow) (pid uint32, granted []int64, err error) {
	err = conn.QueryRow(ctx, `WITH hb AS (
			INSERT INTO projectord.nodes (node_id, hostname, backend_pid, version, started_at, heartbeat_at, pool_backends)
			VALUES ($2, $3, pg_backend_pid(), $6, now(), now(), `+poolBackendsSQL+`)
			ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now(), backend_pid = pg_backend_pid(),
				pool_backends = excluded.pool_backends RETURNING 1)
		SELECT pg_backend_pid(), coalesce(array_agg(objid::int8), '{}') FROM pg_locks
		WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND classid = $1::int4::oid AND objsubid = 2 AND granted`,
		namespace, n.NodeID, n.Hostname, n.PoolPIDs, n.PoolStarts, n.Version).Scan(&pid, &granted)
	return pid, granted, err
}

// Heartbeat is what one heartbeat of a coordination session reads.
type Heartbeat struct {
	// PID is the session's backend pid; Granted the ids of the advisory
	// locks of the namespace it holds.
	PID     uint32
	Granted []int64
	// Members are the other live nodes, by node id: a heartbeat within
	// leaseTimeout and a coordination backend that is still connected (its
	// pid, started before the row's last heartbeat, so a reused pid is not
	// taken for it; a backend whose start this role may not see counts as
	// connected, as in ExpireNodes).
	Members []NodeSession
	// Holders are the sessions holding each lock of the namespace in this
	// database, whoever they are.
	Holders []LockSession
}

// NodeSession is a node and the backend pid of its coordination session.
type NodeSession struct {
	Node string
	PID  int32
}

// LockSession is a held advisory lock (namespace, ID) and its holder's pid.
type LockSession struct {
	ID  int32
	PID int32
}

// HeartbeatView is HeartbeatNode that also reads who is alive and who
// holds which lock, in the same round trip: balancing needs that view on
// every replica, and one statement per heartbeat keeps the idle load
// independent of the number of projectors. pg_locks is read once. The
// node row written by this statement is not visible to its own reads
// (one snapshot), so this node is left out of Members: the caller is
// alive by definition.
func HeartbeatView(ctx context.Context, conn *pgx.Conn, namespace int32, n NodeRow, leaseTimeout time.Duration) (Heartbeat, error) {
	var h Heartbeat
	var memberIDs []string
	var memberPIDs, lockIDs, lockPIDs []int32
	err := conn.QueryRow(ctx, `WITH hb AS (
			INSERT INTO projectord.nodes (node_id, hostname, backend_pid, version, started_at, heartbeat_at, pool_backends)
			VALUES ($2, $3, pg_backend_pid(), $6, now(), now(), `+poolBackendsSQL+`)
			ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now(), backend_pid = pg_backend_pid(),
				pool_backends = excluded.pool_backends RETURNING 1),
		locks AS MATERIALIZED (
			SELECT l.pid, l.objid::int8 AS k, l.database FROM pg_locks l
			WHERE l.locktype = 'advisory' AND l.classid = $1::int4::oid AND l.objsubid = 2 AND l.granted),
		here AS (
			SELECT k, pid FROM locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())),
		live AS (
			SELECT n.node_id, n.backend_pid FROM projectord.nodes n
			WHERE n.node_id <> $2 AND n.heartbeat_at > now() - make_interval(secs => $7)
			  AND EXISTS (SELECT 1 FROM pg_stat_activity a
				WHERE a.pid = n.backend_pid AND (a.backend_start IS NULL OR a.backend_start <= n.heartbeat_at)))
		SELECT pg_backend_pid(),
			coalesce((SELECT array_agg(k) FROM locks WHERE pid = pg_backend_pid()), '{}'),
			coalesce((SELECT array_agg(node_id ORDER BY node_id) FROM live), '{}'),
			coalesce((SELECT array_agg(backend_pid ORDER BY node_id) FROM live), '{}'),
			coalesce((SELECT array_agg(k::int4 ORDER BY k) FROM here), '{}'),
			coalesce((SELECT array_agg(pid ORDER BY k) FROM here), '{}')`,
		namespace, n.NodeID, n.Hostname, n.PoolPIDs, n.PoolStarts, n.Version, leaseTimeout.Seconds(),
	).Scan(&h.PID, &h.Granted, &memberIDs, &memberPIDs, &lockIDs, &lockPIDs)
	if err != nil {
		return Heartbeat{}, err
	}
	for i := range min(len(memberIDs), len(memberPIDs)) {
		h.Members = append(h.Members, NodeSession{Node: memberIDs[i], PID: memberPIDs[i]})
	}
	for i := range min(len(lockIDs), len(lockPIDs)) {
		h.Holders = append(h.Holders, LockSession{ID: lockIDs[i], PID: lockPIDs[i]})
	}
	return h, nil
}

// StalledSession is a backend of a stalled node that TerminateStalled found.
type StalledSession struct {
	Node string
	// Silent is how long the node has not heartbeated.
	Silent     time.Duration
	PID        int32
	Terminated bool
}

// TerminateStalled terminates the sessions of other nodes than self that
// hold one of the advisory locks ids of namespace (in this database) but
// have not heartbeated for leaseTimeout: their coordination backend, every
// pool backend registered in their row, and sessions named after them by
// default. Terminating needs superuser or membership in pg_signal_backend;
// without it the rows come back with Terminated false, or the query fails.
//
// Pids alone are never trusted: a dead node's pid may by now belong to an
// unrelated, newer session. The coordination backend must have started
// before the node's last heartbeat; a pool backend must match the
// backend_start it registered. Sessions named after the node by default are
// a fallback for unregistered ones (an older replica), looked for in this
// database only: other databases of the cluster may run other deployments
// with the same node ids. A name of 63 bytes or more may be a longer node
// id's name, truncated by the server, so it never matches. Advisory locks
// belong to one database.
func TerminateStalled(ctx context.Context, conn *pgx.Conn, namespace int32, ids []int64, self string, leaseTimeout time.Duration) ([]StalledSession, error) {
	rows, err := conn.Query(ctx, `
		WITH stale AS (
			SELECT DISTINCT n.node_id, l.pid, extract(epoch FROM now() - n.heartbeat_at)::float8 AS silent
			FROM pg_locks l
			JOIN projectord.nodes n ON n.backend_pid = l.pid
			JOIN pg_stat_activity a ON a.pid = l.pid AND a.backend_start <= n.heartbeat_at
			WHERE l.locktype = 'advisory' AND l.classid = $1::int4::oid AND l.objsubid = 2 AND l.granted
			  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND l.objid::int8 = ANY($2::int8[]) AND n.node_id <> $3
			  AND n.heartbeat_at < now() - make_interval(secs => $4)),
		victims AS (
			SELECT s.node_id, s.silent, s.pid FROM stale s
			UNION
			SELECT s.node_id, s.silent, a.pid
			FROM stale s JOIN projectord.nodes n ON n.node_id = s.node_id
			CROSS JOIN LATERAL unnest(n.pool_backends) b
			JOIN pg_stat_activity a ON a.pid = b.pid AND a.backend_start = b.backend_start
			UNION
			SELECT s.node_id, s.silent, a.pid
			FROM stale s JOIN pg_stat_activity a
			  ON a.application_name IN ('projectord ' || s.node_id, 'projectord-coord ' || s.node_id)
			 AND octet_length(a.application_name) < 63 AND a.datname = current_database())
		SELECT node_id, silent, pid, pg_terminate_backend(pid) FROM victims`,
		namespace, ids, self, leaseTimeout.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (StalledSession, error) {
		var s StalledSession
		var silent float64
		err := r.Scan(&s.Node, &silent, &s.PID, &s.Terminated)
		s.Silent = time.Duration(silent * float64(time.Second))
		return s, err
	})
}

// ExpireNodes deletes the rows of other nodes than self that have not
// heartbeated for expiry and whose coordination backend is gone, and
// returns their node ids. A row whose backend still lives (same pid,
// started before the row's last heartbeat) is kept however old it is:
// TerminateStalled finds a stalled node's sessions through it. A backend
// whose start this role may not see (pg_stat_activity hides it without
// pg_read_all_stats) counts as alive. A row locked by someone else is being
// written (by its own node, come back): it is skipped, never waited for.
func ExpireNodes(ctx context.Context, conn *pgx.Conn, self string, expiry time.Duration) ([]string, error) {
	rows, err := conn.Query(ctx, `DELETE FROM projectord.nodes WHERE node_id IN (
		SELECT n.node_id FROM projectord.nodes n
		WHERE n.node_id <> $1 AND n.heartbeat_at < now() - make_interval(secs => $2)
		  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a
			WHERE a.pid = n.backend_pid AND (a.backend_start IS NULL OR a.backend_start <= n.heartbeat_at))
		FOR UPDATE SKIP LOCKED)
		RETURNING node_id`, self, expiry.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// RemoveNode deletes node's row (a graceful stop).
func RemoveNode(ctx context.Context, conn *pgx.Conn, node string) error {
	_, err := conn.Exec(ctx, `DELETE FROM projectord.nodes WHERE node_id = $1`, node)
	return err
}

// Notify sends payload on channel in pool's database, where the replicas'
// coordination sessions listen (ResetChannel, ResumeChannel).
func Notify(ctx context.Context, pool *pgxpool.Pool, channel, payload string) error {
	_, err := pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, payload)
	return err
}
