package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// LagCap bounds how many unprocessed events Lag counts, so measuring a
// projector that is far behind stays cheap. Lag reports at most this many.
const LagCap = 1_000_000

// Lag counts the committed events after the cursor that pass f (at most
// LagCap) and returns the creation time of the oldest of them. It ignores
// the horizon on purpose: events held back by a long transaction are
// unprocessed too, and their growing age is the signal an operator needs.
func (r *Reader) Lag(ctx context.Context, after Cursor, f Filter) (events int64, oldest time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var min *time.Time
	if err := r.pool.QueryRow(ctx, r.src.lagSQL(f), readArgs(after, f, LagCap)...).Scan(&events, &min); err != nil {
		return 0, time.Time{}, fmt.Errorf("error measuring lag after %s: %w", after, err)
	}
	if min != nil {
		oldest = *min
	}
	return events, oldest, nil
}

// Horizon describes the oldest transaction holding the xmin horizon back:
// no event written after it started can be read until it ends.
type Horizon struct {
	// PID is the backend holding it (0 for a prepared transaction or none).
	PID int
	// Age is how long it has been open; 0 when nothing holds the horizon.
	Age time.Duration
	// Prepared names a prepared (two-phase) transaction holding it, if any.
	Prepared string
	// ApplicationName is the holding backend's application_name ("" for
	// a prepared transaction).
	ApplicationName string
	// BackendStart is when the holding backend started (zero for a
	// prepared transaction).
	BackendStart time.Time
}

// HorizonHolder finds the oldest transaction with an xid in the cluster.
// Sessions of other roles are visible only with pg_read_all_stats (or
// pg_monitor); without it they are missed.
func HorizonHolder(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) (Horizon, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var h Horizon
	var secs float64
	var start *time.Time
	err := pool.QueryRow(ctx, `
		SELECT pid, extract(epoch FROM now() - started)::float8, prepared, app, backend_start FROM (
			SELECT pid, xact_start AS started, age(backend_xid) AS age, '' AS prepared,
				coalesce(application_name, '') AS app, backend_start
			  FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND xact_start IS NOT NULL
			UNION ALL
			SELECT 0, prepared, age(transaction), gid, '', NULL FROM pg_prepared_xacts
		) t ORDER BY age DESC LIMIT 1`).Scan(&h.PID, &secs, &h.Prepared, &h.ApplicationName, &start)
	if errors.Is(err, pgx.ErrNoRows) {
		return Horizon{}, nil
	}
	if err != nil {
		return Horizon{}, fmt.Errorf("error finding the horizon holder: %w", err)
	}
	h.Age = time.Duration(secs * float64(time.Second))
	if start != nil {
		h.BackendStart = *start
	}
	return h, nil
}

// Connections of projectord itself, as Horizon.Owner names them.
const (
	// OwnPool is a replica's pool: its batches, reads and checks.
	OwnPool = "pool"
	// OwnCoordination is a replica's coordination session.
	OwnCoordination = "coordination"
)

// Owner tells whether projectord itself holds the horizon: which
// node, through which connection (OwnPool or OwnCoordination). Its own
// batches hold the horizon too, for as long as they run. A backend is one
// of a node's pool connections when its pid and backend_start are in the
// node row (pool_backends), its coordination session when it is the row's
// backend_pid and started before the row's last heartbeat; failing both
// (a pool on another cluster), the default application_name tells:
// "projectord NODE" for a pool, "projectord-coord NODE" for a session. Only
// the nodes given are considered, so another program named alike is not
// taken for projectord.
func (h Horizon) Owner(nodes []Node) (node, conn string, ok bool) {
	if h.PID == 0 || h.Prepared != "" {
		return "", "", false
	}
	pid := int32(h.PID)
	for _, n := range nodes {
		for _, b := range n.PoolBackends {
			if b.PID == pid && !h.BackendStart.IsZero() && b.Start.Equal(h.BackendStart) {
				return n.ID, OwnPool, true
			}
		}
		if n.BackendPID == pid && !h.BackendStart.IsZero() && !h.BackendStart.After(n.HeartbeatAt) {
			return n.ID, OwnCoordination, true
		}
	}
	for _, n := range nodes {
		switch h.ApplicationName {
		case "projectord " + n.ID:
			return n.ID, OwnPool, true
		case "projectord-coord " + n.ID:
			return n.ID, OwnCoordination, true
		}
	}
	return "", "", false
}

// lagSQL is Lag's statement; its parameters are readArgs'.
func (s Source) lagSQL(f Filter) string {
	var b strings.Builder
	c := s.Columns
	pos := quoteCol(c.Position)
	fmt.Fprintf(&b, "SELECT count(*), min(created) FROM (SELECT %s AS created FROM %s WHERE ", quoteCol(c.CreatedAt), s.readFrom())
	if s.Ordering == OrderPosition {
		fmt.Fprintf(&b, "%s > $2 AND $1::xid8 IS NOT NULL", pos)
	} else {
		fmt.Fprintf(&b, "(%s, %s) > ($1::xid8, $2::bigint)", quoteCol(c.TransactionID), pos)
	}
	s.filterSQL(&b, f)
	b.WriteString(" LIMIT $3) s")
	return b.String()
}
