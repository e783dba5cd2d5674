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
	var b strings.Builder
	c := r.src.Columns
	pos := quoteCol(c.Position)
	fmt.Fprintf(&b, "SELECT count(*), min(created) FROM (SELECT %s AS created FROM %s WHERE ", quoteCol(c.CreatedAt), r.src.sqlTable())
	if r.src.Ordering == OrderPosition {
		fmt.Fprintf(&b, "%s > $2 AND $1::xid8 IS NOT NULL", pos)
	} else {
		fmt.Fprintf(&b, "(%s, %s) > ($1::xid8, $2::bigint)", quoteCol(c.TransactionID), pos)
	}
	r.src.filterSQL(&b, f)
	fmt.Fprintf(&b, " LIMIT $3) s")
	var min *time.Time
	if err := r.pool.QueryRow(ctx, b.String(), readArgs(after, f, LagCap)...).Scan(&events, &min); err != nil {
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
}

// HorizonHolder finds the oldest transaction with an xid in the cluster.
// Sessions of other roles are visible only with pg_read_all_stats (or
// pg_monitor); without it they are missed.
func HorizonHolder(ctx context.Context, pool *pgxpool.Pool, timeout time.Duration) (Horizon, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var h Horizon
	var secs float64
	err := pool.QueryRow(ctx, `
		SELECT pid, extract(epoch FROM now() - started)::float8, prepared FROM (
			SELECT pid, xact_start AS started, age(backend_xid) AS age, '' AS prepared
			  FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND xact_start IS NOT NULL
			UNION ALL
			SELECT 0, prepared, age(transaction), gid FROM pg_prepared_xacts
		) t ORDER BY age DESC LIMIT 1`).Scan(&h.PID, &secs, &h.Prepared)
	if errors.Is(err, pgx.ErrNoRows) {
		return Horizon{}, nil
	}
	if err != nil {
		return Horizon{}, fmt.Errorf("error finding the horizon holder: %w", err)
	}
	h.Age = time.Duration(secs * float64(time.Second))
	return h, nil
}
