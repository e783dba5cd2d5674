package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Node is a row of projectord.nodes (on the coordination database): a
// replica's coordination session, as it last wrote itself.
type Node struct {
	ID, Hostname, Version string
	// BackendPID is the coordination session's backend (0 if none recorded).
	BackendPID int32
	StartedAt  time.Time
	// HeartbeatAt is the session's last heartbeat; HeartbeatAge is the
	// server's now() minus it, so no client clock is involved (0 for a
	// heartbeat that committed after the reading statement's now(), but
	// before its snapshot).
	HeartbeatAt  time.Time
	HeartbeatAge time.Duration
	// PoolBackends are the node's pool connections, as its session last
	// recorded them.
	PoolBackends []NodeBackend
	// SessionAlive: the coordination backend the row names is connected
	// (its pid, started before the row's last heartbeat; one whose start
	// this role cannot see counts as connected). With a fresh heartbeat,
	// this is what the replicas count as a live member when they balance
	// (HeartbeatView).
	SessionAlive bool
}

// NodeBackend is one backend of a node's pool, named by pid and
// backend_start together (a pid alone may by now be another session's).
type NodeBackend struct {
	PID   int32
	Start time.Time
}

// Nodes returns every node row, by node id, as it is: rows of nodes that
// stopped heartbeating stay until they are removed.
func Nodes(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) ([]Node, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT n.node_id, n.hostname, n.version, coalesce(n.backend_pid, 0), n.started_at,
			n.heartbeat_at, greatest(0, extract(epoch FROM now() - n.heartbeat_at))::float8,
			coalesce((SELECT array_agg(b.pid ORDER BY b.pid) FROM unnest(n.pool_backends) b), '{}'),
			coalesce((SELECT array_agg(b.backend_start ORDER BY b.pid) FROM unnest(n.pool_backends) b), '{}'),
			EXISTS (SELECT 1 FROM pg_stat_activity a
				WHERE a.pid = n.backend_pid AND (a.backend_start IS NULL OR a.backend_start <= n.heartbeat_at))
		FROM projectord.nodes n ORDER BY n.node_id`)
	if err != nil {
		return nil, fmt.Errorf("error listing nodes: %w", err)
	}
	nodes, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Node, error) {
		var n Node
		var age float64
		var pids []*int32
		var starts []*time.Time
		if err := r.Scan(&n.ID, &n.Hostname, &n.Version, &n.BackendPID, &n.StartedAt, &n.HeartbeatAt, &age, &pids, &starts, &n.SessionAlive); err != nil {
			return Node{}, err
		}
		n.HeartbeatAge = time.Duration(age * float64(time.Second))
		for i := range min(len(pids), len(starts)) {
			if pids[i] != nil && starts[i] != nil {
				n.PoolBackends = append(n.PoolBackends, NodeBackend{PID: *pids[i], Start: *starts[i]})
			}
		}
		return n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("error listing nodes: %w", err)
	}
	return nodes, nil
}

// LockHolder is the session holding a projector's advisory lock now.
type LockHolder struct {
	ProjectorID int32
	// PID is the holding backend.
	PID int32
	// Node is the node whose coordination session it is, "" when no node
	// row matches it safely: its backend_pid is the holder and the holder's
	// backend started before the row's last heartbeat (a pid alone may be
	// reused by a newer session; a backend whose start is not visible to
	// this role, without pg_read_all_stats, matches no row).
	Node string
	// HeartbeatAt and HeartbeatAge are the matched node's (zero without one).
	HeartbeatAt  time.Time
	HeartbeatAge time.Duration
}

// LockHolders returns, for those of ids that some session holds, who holds
// their advisory lock (namespace, id) in pg_locks of the coordination
// database pool is on, as coord.Session takes it: session-level locks on
// two int4 keys (objsubid 2), granted, in the current database.
func LockHolders(ctx context.Context, pool *pgxpool.Pool, namespace int32, ids []int32, timeout time.Duration) (map[int32]LockHolder, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	keys := make([]int64, len(ids))
	for i, id := range ids {
		keys[i] = int64(id)
	}
	rows, err := pool.Query(ctx, `SELECT l.objid::int8, l.pid, coalesce(n.node_id, ''),
			coalesce(n.heartbeat_at, 'epoch'::timestamptz), coalesce(greatest(0, extract(epoch FROM now() - n.heartbeat_at))::float8, 0)
		FROM pg_locks l
		LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		LEFT JOIN LATERAL (
			SELECT n.node_id, n.heartbeat_at FROM projectord.nodes n
			WHERE n.backend_pid = l.pid AND a.backend_start <= n.heartbeat_at
			ORDER BY n.heartbeat_at DESC LIMIT 1) n ON true
		WHERE l.locktype = 'advisory' AND l.classid = $1::int4::oid AND l.objsubid = 2 AND l.granted
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.objid::int8 = ANY($2::int8[])`, namespace, keys)
	if err != nil {
		return nil, fmt.Errorf("error reading lock holders: %w", err)
	}
	out := map[int32]LockHolder{}
	var h LockHolder
	var key int64
	var age float64
	_, err = pgx.ForEachRow(rows, []any{&key, &h.PID, &h.Node, &h.HeartbeatAt, &age}, func() error {
		h.ProjectorID = int32(key)
		h.HeartbeatAge = time.Duration(age * float64(time.Second))
		if h.Node == "" {
			h.HeartbeatAt = time.Time{}
		}
		out[h.ProjectorID] = h
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("error reading lock holders: %w", err)
	}
	return out, nil
}

// ProjectorIDs looks up the lock ids of the named projectors, registering
// none (ProjectorID does): a name missing from the result was never run, so
// no session can hold its lock.
func ProjectorIDs(ctx context.Context, pool *pgxpool.Pool, names []string, timeout time.Duration) (map[string]int32, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT name, id FROM projectord.projectors WHERE name = ANY($1::text[])`, names)
	if err != nil {
		return nil, fmt.Errorf("error looking up projector ids: %w", err)
	}
	out := map[string]int32{}
	var name string
	var id int32
	_, err = pgx.ForEachRow(rows, []any{&name, &id}, func() error {
		out[name] = id
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("error looking up projector ids: %w", err)
	}
	return out, nil
}
