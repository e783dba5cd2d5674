package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Reader reads events from the source table, gap-safely.
type Reader struct {
	pool      *pgxpool.Pool
	src       Source
	timeout   time.Duration
	headSQL   string
	newestSQL string

	mu  sync.Mutex
	sql map[string]string // filter key -> statement
}

// NewReader returns a reader of src through pool. Every query is bounded by timeout.
func NewReader(pool *pgxpool.Pool, src Source, timeout time.Duration) *Reader {
	return &Reader{pool: pool, src: src, timeout: timeout, headSQL: src.headSQL(), newestSQL: src.newestSQL(), sql: map[string]string{}}
}

func (r *Reader) statement(f Filter) string {
	key := strings.Join(f.EventTypes, "\x00") + "\x01" + f.StreamPrefix
	if f.PositionFloor > 0 {
		key += "\x02" // the floor's value is a parameter; only its presence shapes the statement
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.sql[key]
	if !ok {
		s = r.src.readSQL(f)
		r.sql[key] = s
	}
	return s
}

// Read appends to buf[:0] up to limit events after the cursor that pass f,
// in cursor order, and returns it. Only events of transactions below the
// xmin horizon are returned, so no later read can find an event before them.
func (r *Reader) Read(ctx context.Context, after Cursor, f Filter, limit int, buf []Event) ([]Event, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rows, err := r.pool.Query(ctx, r.statement(f), readArgs(after, f, limit)...)
	if err != nil {
		return buf[:0], fmt.Errorf("error reading events after %s: %w", after, err)
	}
	defer rows.Close()
	out := buf[:0]
	var eventID pgtype.Text
	for rows.Next() {
		out = append(out, Event{})
		e := &out[len(out)-1]
		if err := rows.Scan(&e.XID, &e.Position, &e.StreamID, &e.StreamVersion, &e.Type, &e.Data, &e.Metadata, &e.CreatedAt, &eventID); err != nil {
			return out[:0], fmt.Errorf("error scanning event: %w", err)
		}
		e.EventID = eventID.String
	}
	if err := rows.Err(); err != nil {
		return out[:0], fmt.Errorf("error reading events after %s: %w", after, err)
	}
	return out, nil
}

// Head returns the newest cursor a reader can see now; ok is false for an
// empty (or wholly invisible) table.
func (r *Reader) Head(ctx context.Context) (c Cursor, ok bool, err error) {
	return r.top(ctx, r.headSQL)
}

// Newest returns the newest committed cursor, including events the horizon
// still holds back; ok is false for an empty table.
func (r *Reader) Newest(ctx context.Context) (c Cursor, ok bool, err error) {
	return r.top(ctx, r.newestSQL)
}

func (r *Reader) top(ctx context.Context, sql string) (c Cursor, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err = r.pool.QueryRow(ctx, sql).Scan(&c.XID, &c.Position)
	if errors.Is(err, pgx.ErrNoRows) {
		return Cursor{}, false, nil
	}
	if err != nil {
		return Cursor{}, false, fmt.Errorf("error reading source head: %w", err)
	}
	return c, true, nil
}
