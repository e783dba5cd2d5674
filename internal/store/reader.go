package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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

	mu   sync.Mutex
	plan *readPlan         // nil until the layout is known
	sql  map[string]string // filter key -> statement
}

// NewReader returns a reader of src through pool. Every query is bounded by
// timeout. Unless WithLayout gives it the table's layout, the first Read
// inspects the catalogue for it, once.
func NewReader(pool *pgxpool.Pool, src Source, timeout time.Duration) *Reader {
	return &Reader{pool: pool, src: src, timeout: timeout, headSQL: src.headSQL(), newestSQL: src.newestSQL(), sql: map[string]string{}}
}

// WithLayout sets the table's layout, as Source.Inspect returned it, so
// the reader need not look it up. Call it before the first Read.
func (r *Reader) WithLayout(l Layout) *Reader {
	p := newReadPlan(r.src, l)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.plan, r.sql = &p, map[string]string{}
	return r
}

func (r *Reader) statement(ctx context.Context, f Filter) (string, readPlan, error) {
	r.mu.Lock()
	plan := r.plan
	r.mu.Unlock()
	if plan == nil {
		l, err := r.src.Inspect(ctx, r.pool)
		if err != nil {
			return "", readPlan{}, err
		}
		p := newReadPlan(r.src, l)
		plan = &p
	}
	// The filter's values are parameters: only which conditions it has
	// shapes the statement. (Keyed by the values, a type list [""] once
	// took the statement of no type list, and its arguments did not fit.)
	key := fmt.Sprintf("%t/%t/%t/%t", len(f.EventTypes) > 0, f.StreamPrefix != "", f.PositionFloor > 0, f.TypeNull)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.plan == nil {
		r.plan = plan
	}
	plan = r.plan
	s, ok := r.sql[key]
	if !ok {
		s = r.src.readSQL(f, *plan)
		r.sql[key] = s
	}
	return s, *plan, nil
}

// Read appends to buf[:0] up to limit events after the cursor that pass f,
// in cursor order, and returns it. Only events of transactions below the
// xmin horizon are returned, so no later read can find an event before them.
//
// No row's values can fail a read: a row that cannot be decoded into an
// event is returned as one with Bad set, so that it poisons itself alone.
func (r *Reader) Read(ctx context.Context, after Cursor, f Filter, limit int, buf []Event) ([]Event, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	sql, plan, err := r.statement(ctx, f)
	if err != nil {
		return buf[:0], fmt.Errorf("error reading events after %s: %w", after, err)
	}
	rows, err := r.pool.Query(ctx, sql, readArgs(after, f, limit)...)
	if err != nil {
		return buf[:0], fmt.Errorf("error reading events after %s: %w", after, err)
	}
	defer rows.Close()
	out := buf[:0]
	var d rowDecoder
	dest := d.dest(plan)
	for rows.Next() {
		out = append(out, Event{})
		e := &out[len(out)-1]
		if err := rows.Scan(dest...); err != nil {
			return out[:0], fmt.Errorf("error scanning event: %w", err)
		}
		d.decode(e, plan, &r.src.Columns)
	}
	if err := rows.Err(); err != nil {
		return out[:0], fmt.Errorf("error reading events after %s: %w", after, err)
	}
	return out, nil
}

// rowDecoder holds one row's scanned values, in NULL-tolerant types.
type rowDecoder struct {
	xid                  uint64
	pos                  int64
	streamID, typ        pgtype.Text
	version              pgtype.Int8
	versionText          pgtype.Text
	data, metadata       []byte // fresh per row: the event keeps them
	createdTZ            pgtype.Timestamptz
	createdNoTZ          pgtype.Timestamp
	createdText, eventID pgtype.Text
}

// dest returns scan targets in selectList order.
func (d *rowDecoder) dest(p readPlan) []any {
	var version, created any = &d.version, &d.createdTZ
	if p.versionText {
		version = &d.versionText
	}
	switch p.createdAt {
	case timeNoTZ, timeDate:
		created = &d.createdNoTZ
	case timeText:
		created = &d.createdText
	}
	return []any{&d.xid, &d.pos, &d.streamID, version, &d.typ, &d.data, &d.metadata, created, &d.eventID}
}

// decode fills e from the scanned row, recording every value that cannot
// be one of an event's.
func (d *rowDecoder) decode(e *Event, p readPlan, c *Columns) {
	e.XID, e.Position = d.xid, d.pos
	e.Data, e.Metadata = d.data, d.metadata
	e.StreamID, e.Type, e.EventID = d.streamID.String, d.typ.String, d.eventID.String
	var bad *BadRowError
	if !d.streamID.Valid {
		bad = nullValue(bad, "stream_id", c.StreamID)
	}
	if !d.typ.Valid {
		bad = nullValue(bad, "event_type", c.EventType)
	}
	if p.versionText {
		switch v, err := strconv.ParseInt(strings.TrimSpace(d.versionText.String), 10, 64); {
		case !d.versionText.Valid:
			bad = nullValue(bad, "stream_version", c.StreamVersion)
		case err != nil:
			bad = badValue(bad, "stream_version", c.StreamVersion, "is not a 64-bit integer")
		default:
			e.StreamVersion = v
		}
	} else if d.version.Valid {
		e.StreamVersion = d.version.Int64
	} else {
		bad = nullValue(bad, "stream_version", c.StreamVersion)
	}
	bad = d.decodeCreatedAt(e, p, c, bad)
	// Text of a json or jsonb column is valid JSON by construction.
	if p.checkData && e.Data != nil && !json.Valid(e.Data) {
		bad = badValue(bad, "data", c.Data, "is not valid JSON")
	}
	if p.checkMetadata && e.Metadata != nil && !json.Valid(e.Metadata) {
		bad = badValue(bad, "metadata", c.Metadata, "is not valid JSON")
	}
	e.Bad = bad
}

func (d *rowDecoder) decodeCreatedAt(e *Event, p readPlan, c *Columns, bad *BadRowError) *BadRowError {
	var valid bool
	var inf pgtype.InfinityModifier
	switch p.createdAt {
	case timeTZ:
		valid, inf, e.CreatedAt = d.createdTZ.Valid, d.createdTZ.InfinityModifier, d.createdTZ.Time
	case timeNoTZ, timeDate:
		valid, inf, e.CreatedAt = d.createdNoTZ.Valid, d.createdNoTZ.InfinityModifier, d.createdNoTZ.Time
	case timeText:
		if valid = d.createdText.Valid; valid {
			var ts pgtype.Timestamptz
			if err := ts.Scan(strings.TrimSpace(d.createdText.String)); err != nil || !ts.Valid {
				return badValue(bad, "created_at", c.CreatedAt, "is not a timestamp")
			}
			inf, e.CreatedAt = ts.InfinityModifier, ts.Time
		}
	}
	switch {
	case !valid:
		return nullValue(bad, "created_at", c.CreatedAt)
	case inf != pgtype.Finite:
		e.CreatedAt = time.Time{}
		return badValue(bad, "created_at", c.CreatedAt, "is infinite")
	}
	return bad
}

func nullValue(bad *BadRowError, field, col string) *BadRowError {
	if bad == nil {
		bad = &BadRowError{}
	}
	bad.Problems = append(bad.Problems, ColumnProblem{Field: field, Column: col, Null: true, Problem: "is NULL"})
	return bad
}

func badValue(bad *BadRowError, field, col, problem string) *BadRowError {
	if bad == nil {
		bad = &BadRowError{}
	}
	bad.Problems = append(bad.Problems, ColumnProblem{Field: field, Column: col, Problem: problem})
	return bad
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

// SystemIdentifier is SystemIdentifier on the reader's database.
func (r *Reader) SystemIdentifier(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	return SystemIdentifier(ctx, r.pool)
}

// ProjectorID is ProjectorID on the reader's database, where the registry
// of lock ids lives.
func (r *Reader) ProjectorID(ctx context.Context, name string) (int32, error) {
	return ProjectorID(ctx, r.pool, name, r.timeout)
}

// HorizonHolder is HorizonHolder on the reader's database.
func (r *Reader) HorizonHolder(ctx context.Context) (Horizon, error) {
	return HorizonHolder(ctx, r.pool, r.timeout)
}
