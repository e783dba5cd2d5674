package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Ordering is how the reader walks the source table.
type Ordering string

const (
	// OrderXID8 reads by (transaction_id, position) below the xmin horizon:
	// never skips an event committed out of order.
	OrderXID8 Ordering = "xid8"
	// OrderPosition reads by position alone. It skips events whose
	// transaction commits after a later position was read. Opt-in only.
	OrderPosition Ordering = "position"
)

// Columns maps event fields to source column names. EventID may be empty.
type Columns struct {
	Position, TransactionID, StreamID, StreamVersion, EventType, Data, Metadata, CreatedAt, EventID string
}

// NativeColumns is the recommended layout's mapping.
var NativeColumns = Columns{
	Position: "global_position", TransactionID: "transaction_id", StreamID: "stream_id",
	StreamVersion: "stream_version", EventType: "event_type", Data: "data",
	Metadata: "metadata", CreatedAt: "created_at",
}

// Source is the events table and how to read it.
type Source struct {
	Table    string // optionally schema-qualified
	Columns  Columns
	Ordering Ordering
}

// quoteTable quotes a possibly schema-qualified table name.
func quoteTable(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}

func quoteCol(name string) string { return pgx.Identifier{name}.Sanitize() }

// Check verifies that the table exists with every mapped column and, for
// xid8 ordering, that the transaction column is xid8. A missing xid8 column
// yields ErrNoXID8.
func (s Source) Check(ctx context.Context, pool *pgxpool.Pool) error {
	schema, table := "public", s.Table
	if i := strings.IndexByte(s.Table, '.'); i >= 0 {
		schema, table = s.Table[:i], s.Table[i+1:]
	}
	rows, err := pool.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod)
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped`, schema, table)
	if err != nil {
		return fmt.Errorf("error inspecting source table %s: %w", s.Table, err)
	}
	types := map[string]string{}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return err
		}
		types[name] = typ
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("error inspecting source table %s: %w", s.Table, err)
	}
	if len(types) == 0 {
		return fmt.Errorf("source table %s does not exist", s.Table)
	}
	var problems []string
	for field, col := range s.mapping() {
		if col == "" {
			continue
		}
		if field == "transaction_id" && s.Ordering == OrderPosition {
			continue
		}
		if _, ok := types[col]; !ok {
			problems = append(problems, fmt.Sprintf("source.columns.%s: column %q not found in %s", field, col, s.Table))
		}
	}
	if s.Ordering != OrderPosition {
		if typ, ok := types[s.Columns.TransactionID]; !ok || typ != "xid8" {
			return fmt.Errorf("%w (table %s, column %q)", ErrNoXID8, s.Table, s.Columns.TransactionID)
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

func (s Source) mapping() map[string]string {
	c := s.Columns
	return map[string]string{
		"position": c.Position, "transaction_id": c.TransactionID, "stream_id": c.StreamID,
		"stream_version": c.StreamVersion, "event_type": c.EventType, "data": c.Data,
		"metadata": c.Metadata, "created_at": c.CreatedAt, "event_id": c.EventID,
	}
}

// xidExpr is the transaction column, or a constant under position ordering.
func (s Source) xidExpr() string {
	if s.Ordering == OrderPosition {
		return "'0'::xid8"
	}
	return quoteCol(s.Columns.TransactionID)
}

// selectList is the event columns in Event field order.
func (s Source) selectList() string {
	c := s.Columns
	eventID := "NULL::text"
	if c.EventID != "" {
		eventID = quoteCol(c.EventID) + "::text"
	}
	return strings.Join([]string{
		s.xidExpr(), quoteCol(c.Position), quoteCol(c.StreamID) + "::text", quoteCol(c.StreamVersion) + "::bigint",
		quoteCol(c.EventType) + "::text", quoteCol(c.Data) + "::jsonb", quoteCol(c.Metadata) + "::jsonb",
		quoteCol(c.CreatedAt), eventID,
	}, ", ")
}

// readSQL builds the batch query. Parameters: $1 xid, $2 position, $3
// limit, then the event types and the stream prefix, numbered in that order
// when the filter uses them (readArgs builds the matching argument list).
func (s Source) readSQL(f Filter) string {
	var b strings.Builder
	pos := quoteCol(s.Columns.Position)
	fmt.Fprintf(&b, "SELECT %s FROM %s WHERE ", s.selectList(), quoteTable(s.Table))
	if s.Ordering == OrderPosition {
		fmt.Fprintf(&b, "%s > $2 AND $1::xid8 IS NOT NULL", pos)
	} else {
		xid := quoteCol(s.Columns.TransactionID)
		// Rows at or above the xmin horizon may still be joined by
		// earlier-positioned rows from transactions not yet committed.
		fmt.Fprintf(&b, "(%s, %s) > ($1::xid8, $2::bigint) AND %s < pg_snapshot_xmin(pg_current_snapshot())", xid, pos, xid)
	}
	s.filterSQL(&b, f)
	if s.Ordering == OrderPosition {
		fmt.Fprintf(&b, " ORDER BY %s LIMIT $3", pos)
	} else {
		fmt.Fprintf(&b, " ORDER BY %s, %s LIMIT $3", quoteCol(s.Columns.TransactionID), pos)
	}
	return b.String()
}

// filterSQL appends f's conditions, numbering parameters from $4 in the
// order readArgs appends their values. The position floor is a condition on
// the index's second column, so an xid8 read stays a range scan on
// (transaction_id, position); it costs one pass over the floor's events.
func (s Source) filterSQL(b *strings.Builder, f Filter) {
	n := 3
	if len(f.EventTypes) > 0 {
		n++
		fmt.Fprintf(b, " AND %s = ANY($%d::text[])", quoteCol(s.Columns.EventType), n)
	}
	if f.StreamPrefix != "" {
		n++
		fmt.Fprintf(b, " AND starts_with(%s::text, $%d::text)", quoteCol(s.Columns.StreamID), n)
	}
	if f.PositionFloor > 0 {
		n++
		fmt.Fprintf(b, " AND %s > $%d::bigint", quoteCol(s.Columns.Position), n)
	}
}

func readArgs(after Cursor, f Filter, limit int) []any {
	args := []any{after.XID, after.Position, limit}
	if len(f.EventTypes) > 0 {
		args = append(args, f.EventTypes)
	}
	if f.StreamPrefix != "" {
		args = append(args, f.StreamPrefix)
	}
	if f.PositionFloor > 0 {
		args = append(args, f.PositionFloor)
	}
	return args
}

// newestSQL is the newest committed cursor, readable or not yet (held back
// by the horizon): what lag is measured against.
func (s Source) newestSQL() string {
	pos := quoteCol(s.Columns.Position)
	if s.Ordering == OrderPosition {
		return fmt.Sprintf("SELECT '0'::xid8, %s FROM %s ORDER BY %s DESC LIMIT 1", pos, quoteTable(s.Table), pos)
	}
	xid := quoteCol(s.Columns.TransactionID)
	return fmt.Sprintf("SELECT %s, %s FROM %s ORDER BY %s DESC, %s DESC LIMIT 1", xid, pos, quoteTable(s.Table), xid, pos)
}

// headSQL is the newest readable cursor: an index-only walk from the top.
func (s Source) headSQL() string {
	pos := quoteCol(s.Columns.Position)
	if s.Ordering == OrderPosition {
		return fmt.Sprintf("SELECT '0'::xid8, %s FROM %s ORDER BY %s DESC LIMIT 1", pos, quoteTable(s.Table), pos)
	}
	xid := quoteCol(s.Columns.TransactionID)
	return fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY %s DESC, %s DESC LIMIT 1",
		xid, pos, quoteTable(s.Table), xid, xid, pos)
}
