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
//
// It is also what source.columns decodes into (config.Columns is this
// type), so a new column is one field here, its key in the README, and its
// value in the presets.
type Columns struct {
	Position      string `mapstructure:"position"`
	TransactionID string `mapstructure:"transaction_id"`
	StreamID      string `mapstructure:"stream_id"`
	StreamVersion string `mapstructure:"stream_version"`
	EventType     string `mapstructure:"event_type"`
	Data          string `mapstructure:"data"`
	Metadata      string `mapstructure:"metadata"`
	CreatedAt     string `mapstructure:"created_at"`
	EventID       string `mapstructure:"event_id"`
}

// NativeColumns is the recommended layout's mapping.
var NativeColumns = Columns{
	Position: "global_position", TransactionID: "transaction_id", StreamID: "stream_id",
	StreamVersion: "stream_version", EventType: "event_type", Data: "data",
	Metadata: "metadata", CreatedAt: "created_at",
}

// Source is the events table and how to read it.
type Source struct {
	// Preset names an entry of Presets whose row rules and virtual
	// columns apply ("" or "native": none).
	Preset   string
	Table    string // optionally schema-qualified
	Columns  Columns
	Ordering Ordering

	// Set by Resolve: the table Table named when resolved, so every
	// statement reads, checks and alters that one table.
	oid          uint32
	schema, name string
}

// quoteTable quotes a possibly schema-qualified table name.
func quoteTable(name string) string {
	return pgx.Identifier(strings.Split(name, ".")).Sanitize()
}

// Resolve looks the table up once, as PostgreSQL resolves the name on this
// connection (an unqualified name through its search_path), and returns
// the source pinned to that table: every statement built from it names
// the table schema-qualified, so what is checked is what is read and what
// `source prepare` alters. A table that does not exist is an error that
// says where it was looked for.
func (s Source) Resolve(ctx context.Context, q querier) (Source, error) {
	rows, err := q.Query(ctx, `SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, current_setting('search_path')
		FROM (SELECT pg_catalog.to_regclass($1) AS oid) r
		LEFT JOIN pg_catalog.pg_class c ON c.oid = r.oid
		LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`, s.sqlTable())
	if err != nil {
		return s, fmt.Errorf("error looking up source table %s: %w", s.Table, err)
	}
	var oid *uint32
	var schema, name, kind *string
	var path string
	found := false
	for rows.Next() {
		found = true
		if err := rows.Scan(&oid, &schema, &name, &kind, &path); err != nil {
			return s, fmt.Errorf("error looking up source table %s: %w", s.Table, err)
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("error looking up source table %s: %w", s.Table, err)
	}
	if !found { // the query always returns one row
		return s, fmt.Errorf("error looking up source table %s: no answer", s.Table)
	}
	if oid == nil || schema == nil {
		if strings.Contains(s.Table, ".") {
			return s, fmt.Errorf("source table %s does not exist", s.Table)
		}
		return s, fmt.Errorf("source table %s does not exist in any schema of the search_path (%s); schema-qualify source.table", s.Table, path)
	}
	switch *kind {
	case "r", "p", "v", "m", "f":
	default:
		return s, fmt.Errorf("source table %s resolves to %s.%s, which is not a table or view", s.Table, *schema, *name)
	}
	s.oid, s.schema, s.name = *oid, *schema, *name
	return s, nil
}

// Resolved reports whether Resolve pinned the source to a table.
func (s Source) Resolved() bool { return s.oid != 0 }

// QualifiedName is the table as resolved, schema.table; before Resolve, the
// configured name.
func (s Source) QualifiedName() string {
	if !s.Resolved() {
		return s.Table
	}
	return s.schema + "." + s.name
}

// sqlTable is the table for a statement: schema-qualified once resolved.
func (s Source) sqlTable() string {
	if !s.Resolved() {
		return quoteTable(s.Table)
	}
	return pgx.Identifier{s.schema, s.name}.Sanitize()
}

// relName is the table's own name, without its schema.
func (s Source) relName() string {
	if s.Resolved() {
		return s.name
	}
	return s.Table[strings.LastIndexByte(s.Table, '.')+1:]
}

func quoteCol(name string) string { return pgx.Identifier{name}.Sanitize() }

// Check verifies that the table exists with every mapped column and, for
// xid8 ordering, that the transaction column is xid8. A missing xid8 column
// yields ErrNoXID8.
func (s Source) Check(ctx context.Context, pool *pgxpool.Pool) error {
	_, err := s.Inspect(ctx, pool)
	return err
}

// ColumnInfo is what the catalogue says about one source column.
type ColumnInfo struct {
	Type    string // format_type(), e.g. "jsonb", "timestamp with time zone"
	NotNull bool
}

// Layout is the source table's columns as the catalogue describes them,
// read once by Inspect: the reader chooses from it how to select each
// field so that no row's value can fail the read.
type Layout struct {
	Columns map[string]ColumnInfo // by column name
}

// Inspect runs Check's verifications and returns the table's layout. It
// inspects the table Resolve pinned, resolving the name first if needed.
func (s Source) Inspect(ctx context.Context, pool *pgxpool.Pool) (Layout, error) {
	if !s.Resolved() {
		r, err := s.Resolve(ctx, pool)
		if err != nil {
			return Layout{}, err
		}
		s = r
	}
	rows, err := pool.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
		FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped`, s.oid)
	if err != nil {
		return Layout{}, fmt.Errorf("error inspecting source table %s: %w", s.QualifiedName(), err)
	}
	l := Layout{Columns: map[string]ColumnInfo{}}
	for rows.Next() {
		var name string
		var ci ColumnInfo
		if err := rows.Scan(&name, &ci.Type, &ci.NotNull); err != nil {
			return Layout{}, err
		}
		l.Columns[name] = ci
	}
	if err := rows.Err(); err != nil {
		return Layout{}, fmt.Errorf("error inspecting source table %s: %w", s.QualifiedName(), err)
	}
	if len(l.Columns) == 0 {
		return Layout{}, fmt.Errorf("source table %s does not exist", s.QualifiedName())
	}
	for _, v := range s.preset().Virtual {
		l.Columns[v.Name] = ColumnInfo{Type: v.Type, NotNull: v.NotNull}
	}
	var problems []string
	for field, col := range s.mapping() {
		if col == "" {
			continue
		}
		if field == "transaction_id" && s.Ordering == OrderPosition {
			continue
		}
		if _, ok := l.Columns[col]; !ok {
			problems = append(problems, fmt.Sprintf("source.columns.%s: column %q not found in %s", field, col, s.QualifiedName()))
		}
	}
	if s.Ordering != OrderPosition {
		if ci, ok := l.Columns[s.Columns.TransactionID]; !ok || ci.Type != "xid8" {
			also := ""
			if _, ok := l.Columns[s.Columns.Position]; !ok && s.preset().AddsPosition {
				also = fmt.Sprintf("; the %s store has no global position either: source prepare adds both", s.Preset)
			}
			return Layout{}, fmt.Errorf("%w (table %s, column %q%s)", ErrNoXID8, s.QualifiedName(), s.Columns.TransactionID, also)
		}
	}
	if len(problems) > 0 {
		if s.preset().AddsPosition {
			if _, ok := l.Columns[s.Columns.Position]; !ok {
				problems = append(problems, fmt.Sprintf("the %s store has no global position: run `projectord source prepare` to add it", s.Preset))
			}
		}
		return Layout{}, errors.New(strings.Join(problems, "; "))
	}
	if s.Preset != "" && s.Preset != "native" {
		// A preset's rows and virtual columns name more than the mapped
		// columns (another table, columns of the store): read nothing
		// once, so a store whose schema differs fails here, not mid-run.
		q := fmt.Sprintf("SELECT %s FROM %s WHERE false", s.selectList(newReadPlan(s, l)), s.readFrom())
		rows, err := pool.Query(ctx, q)
		if err == nil {
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			return Layout{}, fmt.Errorf("source table %s does not read as a %s store: %w", s.QualifiedName(), s.Preset, err)
		}
		for _, r := range s.preset().Refuse {
			var refused bool
			if err := pool.QueryRow(ctx, r.Query, s.oid).Scan(&refused); err != nil {
				return Layout{}, fmt.Errorf("error inspecting source table %s: %w", s.QualifiedName(), err)
			}
			if refused {
				return Layout{}, fmt.Errorf("%w: %s: %s", ErrUnsupportedSource, s.QualifiedName(), r.Message)
			}
		}
	}
	return l, nil
}

// NullableWarnings names, in field order, every mapped column that may
// hold NULL where an event needs a value, and what such a row does: a
// NULL stream id, version, type or creation time makes the row a poison
// event (the projector's on_error policy decides), and a NULL cursor
// column hides the row from every reader, since it has no place in the
// cursor order. None of this stops projectord; it is worth fixing.
func (s Source) NullableWarnings(l Layout) []string {
	c := s.Columns
	fields := []struct{ field, col string }{
		{"position", c.Position}, {"transaction_id", c.TransactionID}, {"stream_id", c.StreamID},
		{"stream_version", c.StreamVersion}, {"event_type", c.EventType}, {"created_at", c.CreatedAt},
	}
	var out []string
	for _, f := range fields {
		if f.field == "transaction_id" && s.Ordering == OrderPosition {
			continue
		}
		ci, ok := l.Columns[f.col]
		if !ok || ci.NotNull {
			continue
		}
		effect := "a row with NULL there becomes a poison event, handled by the projector's on_error policy (halt, skip or dead_letter)"
		if f.field == "position" || f.field == "transaction_id" {
			effect = "a row with NULL there is never read: it has no place in the cursor order"
		}
		out = append(out, fmt.Sprintf("source.columns.%s: column %q of %s is nullable: %s", f.field, f.col, s.QualifiedName(), effect))
	}
	return out
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

// readPlan is how the reader selects and decodes each field, chosen from
// the layout so that no value can fail the statement or the scan: a bad
// value must poison its own event, never the whole batch (README, "Bad
// source rows").
type readPlan struct {
	versionText   bool // stream_version is not an integer column: read as text, parsed in Go
	createdAt     timeKind
	checkData     bool // data is not json/jsonb: validate it in Go
	checkMetadata bool
	posNullable   bool // the position column may hold NULL: exclude such rows
}

type timeKind int

const (
	timeTZ   timeKind = iota // timestamptz, scanned as is
	timeNoTZ                 // timestamp, scanned as is
	timeDate                 // date, cast to timestamp (which cannot fail)
	timeText                 // anything else: its text, parsed in Go
)

func newReadPlan(s Source, l Layout) readPlan {
	c := s.Columns
	typ := func(col string) string { return l.Columns[col].Type }
	isJSON := func(col string) bool { t := typ(col); return t == "jsonb" || t == "json" }
	pos, ok := l.Columns[c.Position]
	p := readPlan{checkData: !isJSON(c.Data), checkMetadata: !isJSON(c.Metadata), posNullable: !ok || !pos.NotNull}
	switch typ(c.StreamVersion) {
	case "bigint", "integer", "smallint":
	default:
		p.versionText = true
	}
	switch t := typ(c.CreatedAt); {
	case strings.HasPrefix(t, "timestamp") && strings.HasSuffix(t, "with time zone"):
		p.createdAt = timeTZ
	case strings.HasPrefix(t, "timestamp") && strings.HasSuffix(t, "without time zone"):
		p.createdAt = timeNoTZ
	case t == "date":
		p.createdAt = timeDate
	default:
		p.createdAt = timeText
	}
	return p
}

// selectList is the event columns in Event field order, each in a form
// that cannot fail: text (which every type casts to), or the column itself
// where its type scans without error. A json or jsonb column is selected
// as is: its value is valid JSON by construction, so only other types pay
// for a cast and a validation.
func (s Source) selectList(p readPlan) string {
	c := s.Columns
	eventID := "NULL::text"
	if c.EventID != "" {
		eventID = quoteCol(c.EventID) + "::text"
	}
	version := quoteCol(c.StreamVersion) + "::bigint"
	if p.versionText {
		version = quoteCol(c.StreamVersion) + "::text"
	}
	data, metadata := quoteCol(c.Data), "NULL::jsonb"
	if c.Metadata != "" {
		metadata = quoteCol(c.Metadata)
	}
	if p.checkData {
		data += "::text"
	}
	if p.checkMetadata && c.Metadata != "" {
		metadata += "::text"
	}
	created := quoteCol(c.CreatedAt)
	switch p.createdAt {
	case timeDate:
		created += "::timestamp"
	case timeText:
		created += "::text"
	}
	return strings.Join([]string{
		s.xidExpr(), quoteCol(c.Position), quoteCol(c.StreamID) + "::text", version,
		quoteCol(c.EventType) + "::text", data, metadata,
		created, eventID,
	}, ", ")
}

// readSQL builds the batch query. Parameters: $1 xid, $2 position, $3
// limit, then the event types and the stream prefix, numbered in that order
// when the filter uses them (readArgs builds the matching argument list).
func (s Source) readSQL(f Filter, p readPlan) string {
	var b strings.Builder
	pos := quoteCol(s.Columns.Position)
	fmt.Fprintf(&b, "SELECT %s FROM %s WHERE ", s.selectList(p), s.readFrom())
	if s.Ordering == OrderPosition {
		fmt.Fprintf(&b, "%s > $2 AND $1::xid8 IS NOT NULL", pos)
	} else {
		xid := quoteCol(s.Columns.TransactionID)
		// Rows at or above the xmin horizon may still be joined by
		// earlier-positioned rows from transactions not yet committed.
		fmt.Fprintf(&b, "(%s, %s) > ($1::xid8, $2::bigint) AND %s < pg_snapshot_xmin(pg_current_snapshot())", xid, pos, xid)
		if p.posNullable {
			// A row comparison stops at the first unequal pair, so (x, NULL)
			// passes it for any x above the cursor's: a NULL position, which
			// has no place in the order, is excluded (an index condition).
			fmt.Fprintf(&b, " AND %s IS NOT NULL", pos)
		}
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
//
// Types and prefixes compare the values' text bytewise (COLLATE "C"), as
// Filter.Matches does in memory for the shared window: under a column's
// nondeterministic collation, "=" could match other bytes than the ones a
// projector's own read got, and a projector moving between the two would
// skip or repeat events.
func (s Source) filterSQL(b *strings.Builder, f Filter) {
	n := 3
	if len(f.EventTypes) > 0 {
		n++
		if f.TypeNull {
			fmt.Fprintf(b, " AND (%[1]s::text COLLATE \"C\" = ANY($%[2]d::text[]) OR %[1]s IS NULL)", quoteCol(s.Columns.EventType), n)
		} else {
			fmt.Fprintf(b, " AND %s::text COLLATE \"C\" = ANY($%d::text[])", quoteCol(s.Columns.EventType), n)
		}
	}
	if f.StreamPrefix != "" {
		n++
		fmt.Fprintf(b, " AND starts_with(%s::text COLLATE \"C\", $%d::text)", quoteCol(s.Columns.StreamID), n)
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
	// DESC sorts NULLs first: a row with a NULL cursor column, which no
	// read returns, must not be the head either.
	if s.Ordering == OrderPosition {
		return fmt.Sprintf("SELECT '0'::xid8, %s FROM %s WHERE %s IS NOT NULL ORDER BY %s DESC LIMIT 1", pos, s.readFrom(), pos, pos)
	}
	xid := quoteCol(s.Columns.TransactionID)
	return fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s IS NOT NULL AND %s IS NOT NULL ORDER BY %s DESC, %s DESC LIMIT 1",
		xid, pos, s.readFrom(), xid, pos, xid, pos)
}

// headSQL is the newest readable cursor: an index-only walk from the top.
func (s Source) headSQL() string {
	pos := quoteCol(s.Columns.Position)
	if s.Ordering == OrderPosition {
		return fmt.Sprintf("SELECT '0'::xid8, %s FROM %s WHERE %s IS NOT NULL ORDER BY %s DESC LIMIT 1", pos, s.readFrom(), pos, pos)
	}
	xid := quoteCol(s.Columns.TransactionID)
	return fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s < pg_snapshot_xmin(pg_current_snapshot()) AND %s IS NOT NULL ORDER BY %s DESC, %s DESC LIMIT 1",
		xid, pos, s.readFrom(), xid, pos, xid, pos)
}
