package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrNoCursorIndex means the source table has no valid btree index that
// serves the reader's ORDER BY: without it every batch sorts the table
// (DESIGN.md §9: 19k events/s at 100k events and falling on Emmett's
// table, against 328k with the index).
var ErrNoCursorIndex = errors.New("source table has no cursor index")

// cursorColumns are the index's key columns the reader's ORDER BY needs,
// in order: (transaction_id, position), or position alone under position
// ordering.
func (s Source) cursorColumns() []string {
	if s.Ordering == OrderPosition {
		return []string{s.Columns.Position}
	}
	return []string{s.Columns.TransactionID, s.Columns.Position}
}

// CheckCursorIndex returns nil when the source table has an index that
// serves the reader, under any name: valid, ready, btree, not partial,
// its leading key columns exactly the cursor's, ascending, with the
// default operator classes. On a partitioned table it must be on the
// table itself and valid, which PostgreSQL makes it only once an index is
// attached on every partition. Otherwise the error wraps ErrNoCursorIndex
// and names the table, the index `source prepare` would create and how to
// create it. src should be resolved; it is resolved here if not.
func CheckCursorIndex(ctx context.Context, q querier, src Source) error {
	if !src.Resolved() {
		r, err := src.Resolve(ctx, q)
		if err != nil {
			return err
		}
		src = r
	}
	tree, err := loadTree(ctx, q, src, false)
	if err != nil {
		return err
	}
	return tree.checkCursorIndex(src)
}

func (t *tableTree) checkCursorIndex(src Source) error {
	root := t.root()
	cols := src.cursorColumns()
	switch root.kind {
	case "r", "p", "m":
	default:
		// A view's or foreign table's reads may or may not be index scans
		// on some table behind it: nothing here can tell.
		return fmt.Errorf("%w: source table %s is a %s, so projectord cannot check that its reads walk an index on (%s); point source.table at the table itself",
			ErrNoCursorIndex, root.qualified(), relkindName(root.kind), strings.Join(cols, ", "))
	}
	if t.serving(root.oid, cols) != nil {
		return nil
	}
	name := indexNameFor(src)
	create := fmt.Sprintf("CREATE INDEX CONCURRENTLY %s ON %s (%s)", quoteCol(name), src.sqlTable(), quoteCols(cols))
	how := "create it (readers and writers go on while it builds): " + create
	if root.kind == "p" {
		how = fmt.Sprintf("run `projectord source prepare --apply`, which creates it on the table, builds it on each of its %d partitions concurrently and attaches them; it starts with: %s",
			len(t.rels)-1, onlyIndexSQL(root, name, cols))
	}
	if problem := t.ourIndexProblem(src, root, name, cols, root.kind == "p", 0); problem != "" {
		return fmt.Errorf("%w: %s; the reader needs an index on %s (%s)", ErrNoCursorIndex, problem, root.qualified(), strings.Join(cols, ", "))
	}
	if ix := t.indexNamed(root, name); ix != nil && !ix.usable() && root.kind == "p" {
		return fmt.Errorf("%w: index %s.%s on %s is INVALID: it is not yet attached on every partition (an interrupted source prepare); run `projectord source prepare --apply` to finish it",
			ErrNoCursorIndex, root.schema, name, root.qualified())
	}
	return fmt.Errorf("%w: %s has no valid btree index on (%s), so every batch would sort the table; %s",
		ErrNoCursorIndex, root.qualified(), strings.Join(cols, ", "), how)
}

// ourIndexProblem explains why the index prepare names name cannot be
// (or become) the cursor index of rel, "" when it is absent or can: a
// relation of that name that is no index of rel, a wrongly shaped index
// (with exact, anything but prepare's very definition, which a
// partitioned level and its partitions need to attach), one attached to
// an index other than parent's, or, on a table that is not partitioned,
// an INVALID one (a failed or running concurrent build, which IF NOT
// EXISTS would silently skip). An INVALID partitioned index is an
// interrupted prepare that re-running finishes, so it is no problem here.
func (t *tableTree) ourIndexProblem(src Source, rel relation, name string, cols []string, exact bool, parent uint32) string {
	other, ok := t.named[relKey{rel.schema, name}]
	if !ok {
		return ""
	}
	ix := t.byOID[other.oid]
	shaped := ix != nil && ix.leads(cols)
	if exact {
		shaped = ix != nil && ix.exactly(cols)
	}
	switch {
	case other.kind != "i" && other.kind != "I":
		return fmt.Sprintf("source prepare cannot create index %s.%s: a %s of that name already exists; rename it and re-run",
			rel.schema, name, relkindName(other.kind))
	case ix == nil || ix.rel != rel.oid:
		return fmt.Sprintf("source prepare cannot create index %s.%s: an index of that name exists on another table; rename it and re-run", rel.schema, name)
	case !shaped:
		// A key in DESC or NULLS FIRST order cannot serve the reader's
		// ORDER BY (mixed directions), nor can a partial index.
		want := "ascending btree index on (" + strings.Join(cols, ", ") + ")"
		if exact {
			want = "plain " + want + " with no other column, which partitions attach to"
		}
		return fmt.Sprintf("index %s.%s on %s is not the %s the reader needs (it is %s); rename it and re-run",
			rel.schema, name, rel.qualified(), want, ix.describe())
	case ix.parent != 0 && ix.parent != parent:
		return fmt.Sprintf("index %s.%s on partition %s is attached to another partitioned index; rename it and re-run", rel.schema, name, rel.qualified())
	case !ix.usable() && rel.kind != "p":
		building := "building it concurrently failed (see the server log)"
		if ix.buildPID != 0 {
			building = fmt.Sprintf("it is being built concurrently by pid %d; wait for that build, or cancel it", ix.buildPID)
		}
		return fmt.Sprintf("index %s.%s on %s is INVALID: %s; drop it (DROP INDEX CONCURRENTLY %s) and re-run source prepare --apply",
			rel.schema, name, rel.qualified(), building, pgx.Identifier{rel.schema, name}.Sanitize())
	}
	return ""
}

// relation is one table of a source's partition tree (the table alone
// when it is not partitioned).
type relation struct {
	oid          uint32
	schema, name string
	kind         string // pg_class.relkind
	parent       uint32 // 0 for the root
	rows         float64
	bytes        int64 // heap and TOAST, without indexes
}

func (r relation) qualified() string { return r.schema + "." + r.name }
func (r relation) sql() string       { return pgx.Identifier{r.schema, r.name}.Sanitize() }

// catIndex is what the catalogue says about one index of the tree.
type catIndex struct {
	oid, rel                     uint32
	name                         string
	kind                         string // i, or I for a partitioned index
	am                           string
	valid, ready, live           bool
	unique, partial, expressions bool
	nkey, natts                  int
	keys                         []string // key columns by name, "" for an expression
	opts                         []int16  // indoption per key column: 0 is ASC NULLS LAST
	defaultOpclass               []bool
	parent                       uint32 // the partitioned index it is attached to, 0 if none
	buildPID                     int32  // the backend building it concurrently, 0 if none
	clustered                    bool   // the table's CLUSTER index (indisclustered)
}

// usable: PostgreSQL plans with it and maintains it.
func (ix *catIndex) usable() bool { return ix.valid && ix.ready && ix.live }

// leads: the index's leading key columns are cols, ascending with default
// operator classes, in a full btree: its order is the reader's ORDER BY.
func (ix *catIndex) leads(cols []string) bool {
	if ix.am != "btree" || ix.partial || len(ix.keys) < len(cols) || len(ix.opts) < len(cols) || len(ix.defaultOpclass) < len(cols) {
		return false
	}
	for i, c := range cols {
		if ix.keys[i] != c || ix.opts[i] != 0 || !ix.defaultOpclass[i] {
			return false
		}
	}
	return true
}

// exactly: the index is the very one prepare creates, on cols and nothing
// else, so that it may be attached to prepare's index on a parent
// (PostgreSQL attaches only indexes of identical definitions).
func (ix *catIndex) exactly(cols []string) bool {
	return ix.leads(cols) && !ix.unique && !ix.expressions && ix.nkey == len(cols) && ix.natts == len(cols)
}

func (ix *catIndex) describe() string {
	var b strings.Builder
	if ix.unique {
		b.WriteString("a unique ")
	} else {
		b.WriteString("a ")
	}
	fmt.Fprintf(&b, "%s index on (", ix.am)
	for i, k := range ix.keys {
		if i > 0 {
			b.WriteString(", ")
		}
		if k == "" {
			k = "an expression"
		}
		b.WriteString(k)
		if i < len(ix.opts) && ix.opts[i]&1 != 0 {
			b.WriteString(" DESC")
		}
		if i < len(ix.opts) && ix.opts[i]&2 != 0 {
			b.WriteString(" NULLS FIRST")
		}
		if i < len(ix.defaultOpclass) && !ix.defaultOpclass[i] {
			b.WriteString(" with a non-default operator class")
		}
	}
	b.WriteString(")")
	if ix.natts > ix.nkey {
		b.WriteString(" INCLUDE columns")
	}
	if ix.partial {
		b.WriteString(", partial")
	}
	return b.String()
}

type relKey struct{ schema, name string }

// namedRel is a relation found by name in a schema.
type namedRel struct {
	oid  uint32
	kind string
}

// tableTree is the catalogue's view of a source table, its partitions at
// every level, their indexes and the relations that hold the names
// prepare gives its indexes.
type tableTree struct {
	rels     []relation // root first, then by level
	children map[uint32][]relation
	indexes  map[uint32][]*catIndex // by table
	byOID    map[uint32]*catIndex
	named    map[relKey]namedRel
	// For PlanPrepare: the source's mapped columns that exist on the root,
	// by name, with their types.
	columns map[string]string
	// triggers of the root by name.
	triggers map[string]catTrigger
	// notifyFunctionOK: projectord.notify_events() is the function prepare
	// creates.
	notifyFunctionOK bool
}

type catTrigger struct {
	funcOK  bool // calls projectord.notify_events()
	enabled bool
	tgtype  int16
	args    []byte
}

func (t *tableTree) root() relation { return t.rels[0] }

// serving returns an index of table oid that serves the reader, nil if
// none does.
func (t *tableTree) serving(oid uint32, cols []string) *catIndex {
	for _, ix := range t.indexes[oid] {
		if ix.usable() && ix.leads(cols) {
			return ix
		}
	}
	return nil
}

// indexNamed returns rel's index called name, nil when rel has none.
func (t *tableTree) indexNamed(rel relation, name string) *catIndex {
	n, ok := t.named[relKey{rel.schema, name}]
	if !ok {
		return nil
	}
	if ix := t.byOID[n.oid]; ix != nil && ix.rel == rel.oid {
		return ix
	}
	return nil
}

// loadTree reads the source's partition tree and every index on it, and
// who holds the names prepare would give its indexes. With full, also
// the root's columns and triggers.
func loadTree(ctx context.Context, q querier, src Source, full bool) (*tableTree, error) {
	table := src.QualifiedName()
	fail := func(err error) (*tableTree, error) {
		return nil, fmt.Errorf("error reading the catalogue for %s: %w", table, err)
	}
	t := &tableTree{children: map[uint32][]relation{}, indexes: map[uint32][]*catIndex{}, byOID: map[uint32]*catIndex{},
		named: map[relKey]namedRel{}, columns: map[string]string{}, triggers: map[string]catTrigger{}}
	// pg_partition_tree lists a partitioned table with every partition
	// below it, and a partition alone; a table that is neither it does
	// not list at all, hence the union.
	rows, err := q.Query(ctx, `WITH pt AS (
			SELECT relid::oid, coalesce(parentrelid::oid, 0::oid) AS parent, level FROM pg_catalog.pg_partition_tree($1::oid)
		), tree AS (
			SELECT * FROM pt UNION ALL SELECT $1::oid, 0::oid, 0 WHERE NOT EXISTS (SELECT FROM pt WHERE pt.relid = $1::oid)
		)
		SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, CASE WHEN c.oid = $1::oid THEN 0::oid ELSE t.parent END,
			greatest(c.reltuples, 0)::float8, CASE WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_table_size(c.oid) ELSE 0 END
		FROM tree t JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		ORDER BY t.level, n.nspname, c.relname`, src.oid)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var r relation
		if err := rows.Scan(&r.oid, &r.schema, &r.name, &r.kind, &r.parent, &r.rows, &r.bytes); err != nil {
			return fail(err)
		}
		t.rels = append(t.rels, r)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	if len(t.rels) == 0 || t.rels[0].oid != src.oid {
		return nil, fmt.Errorf("source table %s does not exist any more", table)
	}
	oids := make([]uint32, len(t.rels))
	schemas, names := make([]string, len(t.rels)), make([]string, len(t.rels))
	for i, r := range t.rels {
		oids[i] = r.oid
		if i > 0 {
			t.children[r.parent] = append(t.children[r.parent], r)
		}
		rs := Source{Columns: src.Columns, Ordering: src.Ordering, oid: r.oid, schema: r.schema, name: r.name}
		if i == 0 {
			rs.Preset = src.Preset // the root's index may have the store's own name
		}
		schemas[i], names[i] = r.schema, indexNameFor(rs)
	}

	rows, err = q.Query(ctx, `SELECT i.indexrelid, i.indrelid, ic.relname::text, ic.relkind::text, am.amname::text,
			i.indisvalid, i.indisready, i.indislive, i.indisunique, i.indpred IS NOT NULL, i.indexprs IS NOT NULL,
			i.indnkeyatts, i.indnatts,
			ARRAY(SELECT coalesce(a.attname::text, '') FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
				LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum > 0
				WHERE k.n <= i.indnkeyatts ORDER BY k.n),
			ARRAY(SELECT o.opt FROM unnest(i.indoption::int2[]) WITH ORDINALITY o(opt, n) WHERE o.n <= i.indnkeyatts ORDER BY o.n),
			ARRAY(SELECT coalesce(oc.opcdefault, false) FROM unnest(i.indclass::oid[]) WITH ORDINALITY k(cls, n)
				LEFT JOIN pg_catalog.pg_opclass oc ON oc.oid = k.cls WHERE k.n <= i.indnkeyatts ORDER BY k.n),
			coalesce((SELECT h.inhparent FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid), 0),
			coalesce((SELECT p.pid FROM pg_catalog.pg_stat_progress_create_index p WHERE p.index_relid = i.indexrelid LIMIT 1), 0),
			i.indisclustered
		FROM pg_catalog.pg_index i
		JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
		JOIN pg_catalog.pg_am am ON am.oid = ic.relam
		WHERE i.indrelid = ANY($1::oid[])
		ORDER BY ic.relname`, oids)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		ix := &catIndex{}
		if err := rows.Scan(&ix.oid, &ix.rel, &ix.name, &ix.kind, &ix.am, &ix.valid, &ix.ready, &ix.live, &ix.unique, &ix.partial,
			&ix.expressions, &ix.nkey, &ix.natts, &ix.keys, &ix.opts, &ix.defaultOpclass, &ix.parent, &ix.buildPID, &ix.clustered); err != nil {
			return fail(err)
		}
		t.indexes[ix.rel] = append(t.indexes[ix.rel], ix)
		t.byOID[ix.oid] = ix
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}

	rows, err = q.Query(ctx, `SELECT n.nspname::text, c.relname::text, c.oid, c.relkind::text
		FROM unnest($1::text[], $2::text[]) w(schema, name)
		JOIN pg_catalog.pg_namespace n ON n.nspname = w.schema
		JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.name`, schemas, names)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var k relKey
		var n namedRel
		if err := rows.Scan(&k.schema, &k.name, &n.oid, &n.kind); err != nil {
			return fail(err)
		}
		t.named[k] = n
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	if !full {
		return t, nil
	}

	rows, err = q.Query(ctx, `SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_catalog.pg_attribute
		WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, src.oid)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			return fail(err)
		}
		t.columns[name] = typ
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	rows, err = q.Query(ctx, `SELECT tgname::text, tgfoid = coalesce(pg_catalog.to_regprocedure('projectord.notify_events()'), 0),
			tgenabled <> 'D', tgtype, tgargs
		FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal`, src.oid)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var name string
		var tr catTrigger
		if err := rows.Scan(&name, &tr.funcOK, &tr.enabled, &tr.tgtype, &tr.args); err != nil {
			return fail(err)
		}
		t.triggers[name] = tr
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	rows, err = q.Query(ctx, `SELECT p.prosrc, coalesce(p.proconfig, '{}') FROM pg_catalog.pg_proc p
		WHERE p.oid = pg_catalog.to_regprocedure('projectord.notify_events()')`)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var body string
		var conf []string
		if err := rows.Scan(&body, &conf); err != nil {
			return fail(err)
		}
		t.notifyFunctionOK = body == notifyFunctionBody && slices.Equal(conf, notifyFunctionConfig)
	}
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	return t, nil
}

func relkindName(kind string) string {
	switch kind {
	case "r":
		return "table"
	case "p":
		return "partitioned table"
	case "i":
		return "index"
	case "I":
		return "partitioned index"
	case "S":
		return "sequence"
	case "v":
		return "view"
	case "m":
		return "materialized view"
	case "f":
		return "foreign table"
	case "c":
		return "composite type"
	case "t":
		return "TOAST table"
	}
	return "relation of kind " + kind
}

func quoteCols(cols []string) string {
	q := make([]string, len(cols))
	for i, c := range cols {
		q[i] = quoteCol(c)
	}
	return strings.Join(q, ", ")
}
