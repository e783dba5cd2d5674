package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NativeTableSQL creates an events table in the recommended native layout.
// The xid8 column records each writer's transaction, which makes reads
// gap-safe; the index serves both the reader and the head query.
func NativeTableSQL(table string) []string {
	t := quoteTable(table)
	return []string{
		fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text NOT NULL,
    stream_version  bigint NOT NULL,
    event_type      text NOT NULL,
    data            jsonb NOT NULL,
    metadata        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, stream_version)
)`, t),
		fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %s ON %s (transaction_id, global_position)`,
			quoteCol(xidIndexName(Source{Table: table, Columns: NativeColumns})), t),
	}
}

// PrepareStep is one statement of `source prepare`, with why it is there
// and what it locks.
type PrepareStep struct {
	Why string
	SQL string
	// Concurrent steps cannot run inside a transaction block.
	Concurrent bool
	// Locks says what the statement locks and for how long, for the
	// operator deciding when to run it.
	Locks string
	// AddsTransactionColumn: the step adds the xid8 column, giving every
	// row already in the table xid 1.
	AddsTransactionColumn bool
	// Holds is, per relation that exists before the step runs, the
	// strongest lock the step takes on it: every lock stronger than
	// ACCESS SHARE (which blocks no reader or writer) is listed. A
	// concurrent step takes its locks outside a transaction, over time.
	Holds []LockHold
}

// LockHold is one relation lock of a step.
type LockHold struct {
	Schema, Name string
	Mode         string // as pg_locks names it, e.g. AccessExclusiveLock
}

// lockModes are PostgreSQL's table lock modes, weakest first.
var lockModes = []string{"AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
	"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}

// LockStrength orders lock modes (pg_locks names), weakest first; -1 for
// a name that is no table lock mode.
func LockStrength(mode string) int { return slices.Index(lockModes, mode) }

// lockConflicts is PostgreSQL's conflict table (explicit-locking.html),
// by strength.
var lockConflicts = [][]int{
	{7},                      // ACCESS SHARE
	{6, 7},                   // ROW SHARE
	{4, 5, 6, 7},             // ROW EXCLUSIVE
	{3, 4, 5, 6, 7},          // SHARE UPDATE EXCLUSIVE
	{2, 3, 5, 6, 7},          // SHARE
	{2, 3, 4, 5, 6, 7},       // SHARE ROW EXCLUSIVE
	{1, 2, 3, 4, 5, 6, 7},    // EXCLUSIVE
	{0, 1, 2, 3, 4, 5, 6, 7}, // ACCESS EXCLUSIVE
}

func conflicts(a, b string) bool {
	i, j := LockStrength(a), LockStrength(b)
	return i >= 0 && j >= 0 && slices.Contains(lockConflicts[i], j)
}

// modeName is a pg_locks mode as the documentation spells it:
// AccessExclusiveLock is ACCESS EXCLUSIVE.
func modeName(mode string) string {
	m := strings.TrimSuffix(mode, "Lock")
	var b strings.Builder
	for i, r := range m {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte(' ')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

// PrepareSQL returns what `projectord source prepare` would run against
// an existing native-style events table, without looking at it: the xid8
// column (existing rows get a constant old xid, so they keep their
// position order and are read first; new rows get their writer's xid),
// the (transaction_id, position) index, and, with notify, the opt-in
// statement-level NOTIFY trigger. Every statement is idempotent. The
// command itself runs PlanPrepare, which reads the catalogue and returns
// only what the table still needs; this pure form sets up tables in tests
// and in the demo.
//
// src should be resolved (Source.Resolve), so the statements name the very
// table the daemon reads. Object names always fit PostgreSQL's 63 bytes
// and never collide with the table's own name (see objectName).
func PrepareSQL(src Source, notify bool, channel string) []PrepareStep {
	root := sourceRelation(src)
	cols := []string{src.Columns.TransactionID, src.Columns.Position}
	steps := []PrepareStep{
		xidStep(src, []relation{root}),
		buildStep(root, xidIndexName(src), cols, "index the gap-safe cursor (built concurrently: writers are not blocked)"),
	}
	if notify {
		fn := functionStep()
		fn.SQL += ";\n" + dropTriggerSQL(src) + ";\n" + createTriggerSQL(src, channel)
		fn.Why = notifyWhy
		fn.Locks = "ACCESS EXCLUSIVE on " + root.qualified() + " (DROP TRIGGER), catalogue only: " + briefLock + " readers and writers queue behind it"
		fn.Holds = []LockHold{{root.schema, root.name, "AccessExclusiveLock"}}
		steps = append(steps, fn)
	}
	return steps
}

// sourceRelation is src's table as a relation: as resolved, or as
// configured (public when unqualified) before.
func sourceRelation(src Source) relation {
	if src.Resolved() {
		return relation{oid: src.oid, schema: src.schema, name: src.name, kind: "r"}
	}
	schema := "public"
	if i := strings.LastIndexByte(src.Table, '.'); i >= 0 {
		schema = src.Table[:i]
	}
	return relation{schema: schema, name: src.relName(), kind: "r"}
}

// briefLock is how long a catalogue-only lock is held, and the catch.
const briefLock = "milliseconds once granted, but it queues behind every open transaction that has used the table " +
	"(bounded by lock_timeout when applied), and while it waits"

const notifyWhy = "opt-in wake-up hint: one NOTIFY per inserting statement. NOTIFY serialises committing writers " +
	"(8 single-row writers fell from 11.8k to 5.1k transactions/s on a 2-core machine); polling stays the source of truth"

func xidStep(src Source, tables []relation) PrepareStep {
	root := tables[0]
	t, xid := root.sql(), quoteCol(src.Columns.TransactionID)
	holds := make([]LockHold, len(tables))
	for i, r := range tables {
		holds[i] = LockHold{r.schema, r.name, "AccessExclusiveLock"}
	}
	on := root.qualified()
	if n := len(tables) - 1; n > 0 {
		on += fmt.Sprintf(" and each of its %d partitions", n)
	}
	return PrepareStep{
		AddsTransactionColumn: true,
		Why:                   "add the xid8 transaction column; existing rows get the constant xid 1, new rows their writer's xid (no table rewrite)",
		SQL:                   fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s xid8 NOT NULL DEFAULT '1';\nALTER TABLE %s ALTER COLUMN %s SET DEFAULT pg_current_xact_id()", t, xid, t, xid),
		Locks:                 "ACCESS EXCLUSIVE on " + on + ", catalogue only (no rewrite): " + briefLock + " readers and writers queue behind it",
		Holds:                 holds,
	}
}

func positionStep(src Source, root relation, indexes []*catIndex) (PrepareStep, error) {
	holds := []LockHold{{root.schema, root.name, "AccessExclusiveLock"}}
	for _, ix := range indexes {
		holds = append(holds, LockHold{root.schema, ix.name, "AccessExclusiveLock"})
	}
	add := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s bigint GENERATED ALWAYS AS IDENTITY", root.sql(), quoteCol(src.Columns.Position))
	why := fmt.Sprintf("add the global position %q the %s store lacks, as an identity column: existing rows get distinct positions "+
		"in the table's physical order, from its first block (no trigger fires, no row is updated), new rows the next value", src.Columns.Position, src.Preset)
	rewrite := "a full rewrite of the table"
	if col := src.preset().PositionOrder; col != "" {
		// The rewrite numbers rows in physical order, which is insertion
		// order only until VACUUM lets a new row into space an aborted or
		// deleted one freed: then a stream's later event would get the
		// smaller position and be applied first. CLUSTER puts the rows in
		// the store's own order first, under the same lock.
		var by *catIndex
		for _, ix := range indexes {
			if ix.usable() && ix.leads([]string{col}) && !ix.expressions {
				by = ix
				break
			}
		}
		if by == nil {
			return PrepareStep{}, fmt.Errorf("source table %s has no valid btree index on %q, the %s store's own order, to number its existing events in; create one and re-run source prepare",
				root.qualified(), col, src.Preset)
		}
		restore := fmt.Sprintf("ALTER TABLE %s SET WITHOUT CLUSTER", root.sql())
		for _, ix := range indexes {
			if ix.clustered {
				restore = fmt.Sprintf("ALTER TABLE %s CLUSTER ON %s", root.sql(), quoteCol(ix.name))
			}
		}
		add = fmt.Sprintf("CLUSTER %s USING %s;\n%s;\n%s", root.sql(), quoteCol(by.name), add, restore)
		why = fmt.Sprintf("add the global position %q the %s store lacks, as an identity column: existing rows get distinct positions "+
			"in the store's own order (%s, put in that order first by CLUSTER; the table's CLUSTER setting is left as it was), new rows the next value; "+
			"no trigger fires, no row is updated", src.Columns.Position, src.Preset, col)
		rewrite = "two full rewrites of the table (CLUSTER, then the identity column)"
	}
	return PrepareStep{
		Why: why,
		// The rewrite numbers rows in the order its sequential scan meets
		// them, and a scan of a table larger than a quarter of
		// shared_buffers starts where the last sequential scan of it
		// stopped (synchronize_seqscans): after an ad-hoc lookup that
		// stopped mid-table, every stream's later events would get lower
		// positions than its first ones. Off, the scan starts at block 0.
		SQL: "SET LOCAL synchronize_seqscans = off;\n" + add,
		Locks: fmt.Sprintf("ACCESS EXCLUSIVE on %s for %s (%s) and a rebuild of its %d indexes: every reader and writer "+
			"waits for the whole rewrite (docs/sources.md has measured times), and the lock first queues behind every open transaction that has used the table "+
			"(bounded by lock_timeout when applied)",
			root.qualified(), rewrite, root.size(), len(indexes)),
		Holds: holds,
	}, nil
}

func buildStep(rel relation, name string, cols []string, why string) PrepareStep {
	size := ""
	if rel.oid != 0 {
		size = " (" + rel.size() + ")"
	}
	return PrepareStep{
		Why:        why,
		SQL:        fmt.Sprintf("CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s)", quoteCol(name), rel.sql(), quoteCols(cols)),
		Concurrent: true,
		Locks: "SHARE UPDATE EXCLUSIVE on " + rel.qualified() + " for the whole build" + size + ": readers and writers go on; " +
			"VACUUM, DDL and other index builds on it wait. It first waits for the transactions writing to it to end, then scans it twice; " +
			"a build that fails or is cancelled leaves an INVALID index, which source prepare then names",
		Holds: []LockHold{{rel.schema, rel.name, "ShareUpdateExclusiveLock"}},
	}
}

func onlyIndexSQL(rel relation, name string, cols []string) string {
	return fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON ONLY %s (%s)", quoteCol(name), rel.sql(), quoteCols(cols))
}

func onlyStep(rel relation, name string, cols []string) PrepareStep {
	return PrepareStep{
		Why: fmt.Sprintf("create the cursor index on partitioned table %s alone (ON ONLY builds nothing): partitions created from now on get it, "+
			"and it becomes valid once every partition's index is attached", rel.qualified()),
		SQL:   onlyIndexSQL(rel, name, cols),
		Locks: "SHARE on " + rel.qualified() + ", catalogue only: " + briefLock + " writes through it queue behind it (reads do not)",
		Holds: []LockHold{{rel.schema, rel.name, "ShareLock"}},
	}
}

func attachStep(parent relation, parentIdx string, child relation, childIdx string) PrepareStep {
	return PrepareStep{
		Why: fmt.Sprintf("attach the index of partition %s to %s's", child.qualified(), parent.qualified()),
		SQL: fmt.Sprintf("ALTER INDEX %s ATTACH PARTITION %s", pgx.Identifier{parent.schema, parentIdx}.Sanitize(),
			pgx.Identifier{child.schema, childIdx}.Sanitize()),
		Locks: fmt.Sprintf("ACCESS EXCLUSIVE on index %s.%s and SHARE UPDATE EXCLUSIVE on index %s.%s, catalogue only: %s every read and write of %s "+
			"queues behind it (each opens the table's indexes)", child.schema, childIdx, parent.schema, parentIdx, briefLock, child.qualified()),
		Holds: []LockHold{{child.schema, childIdx, "AccessExclusiveLock"}, {parent.schema, parentIdx, "ShareUpdateExclusiveLock"}},
	}
}

// notifyFunctionBody is projectord.notify_events()'s source; PlanPrepare
// compares it with the installed one.
const notifyFunctionBody = `
BEGIN
    PERFORM pg_catalog.pg_notify(TG_ARGV[0], '');
    RETURN NULL;
END
`

// notifyFunctionConfig is the function's pinned settings as proconfig
// lists them.
var notifyFunctionConfig = []string{"search_path=pg_catalog, pg_temp"}

func functionStep() PrepareStep {
	return PrepareStep{
		Why: "the NOTIFY trigger's function",
		SQL: `CREATE SCHEMA IF NOT EXISTS projectord;
CREATE OR REPLACE FUNCTION projectord.notify_events() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$` + notifyFunctionBody + `$$`,
		Locks: "no lock on the events table: it creates or replaces a function in schema projectord",
	}
}

func dropTriggerSQL(src Source) string {
	return fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", quoteCol(triggerNameFor(src)), src.sqlTable())
}

func createTriggerSQL(src Source, channel string) string {
	return fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT ON %s FOR EACH STATEMENT EXECUTE FUNCTION projectord.notify_events(%s)",
		quoteCol(triggerNameFor(src)), src.sqlTable(), quoteLiteral(channel))
}

func triggerStep(src Source, root relation, channel string, replace bool) PrepareStep {
	s := PrepareStep{
		Why:   notifyWhy,
		SQL:   createTriggerSQL(src, channel),
		Locks: "SHARE ROW EXCLUSIVE on " + root.qualified() + ", catalogue only: " + briefLock + " writers queue behind it (readers do not)",
		Holds: []LockHold{{root.schema, root.name, "ShareRowExclusiveLock"}},
	}
	if replace {
		s.Why = "replace trigger " + triggerNameFor(src) + ", which is not the one source prepare creates: " + notifyWhy
		s.SQL = dropTriggerSQL(src) + ";\n" + s.SQL
		s.Locks = "ACCESS EXCLUSIVE on " + root.qualified() + " (DROP TRIGGER), catalogue only: " + briefLock + " readers and writers queue behind it"
		s.Holds[0].Mode = "AccessExclusiveLock"
	}
	return s
}

// statementAfterInsert is pg_trigger.tgtype for AFTER INSERT FOR EACH
// STATEMENT (TRIGGER_TYPE_INSERT alone).
const statementAfterInsert = 4

// PlanPrepare reads the catalogue and returns the statements `source
// prepare` still has to run on src's table, in order; none when the
// table has everything already (re-running on a prepared table does
// nothing). It never alters what the table already has: an existing xid8
// column keeps its default (Emmett's has none, and its writers set it),
// and an index that already serves the reader, under any name, is used.
//
//   - the xid8 transaction column, when it is missing: a constant '1'
//     for existing rows, then pg_current_xact_id() as the default;
//   - when src's preset AddsPosition and the position column is missing:
//     the position as an identity column (a table rewrite);
//   - the cursor index (transaction_id, position), or (position) under
//     position ordering, unless a valid index serves it (see
//     CheckCursorIndex): CREATE INDEX CONCURRENTLY on a plain table; on a
//     partitioned one the index ON ONLY each partitioned level, built
//     CONCURRENTLY on each leaf partition (or a matching index the leaf
//     has), then attached bottom-up, so that it turns valid level by
//     level and partitions created later get it;
//   - with notify, the NOTIFY function and trigger, when missing or not
//     the ones prepare creates.
//
// src must be resolved. Names come from objectName, per partition.
func PlanPrepare(ctx context.Context, q querier, src Source, notify bool, channel string) ([]PrepareStep, error) {
	if !src.Resolved() {
		return nil, fmt.Errorf("source table %s: not resolved", src.Table)
	}
	tree, err := loadTree(ctx, q, src, true)
	if err != nil {
		return nil, err
	}
	root := tree.root()
	table := root.qualified()
	if root.kind != "r" && root.kind != "p" {
		return nil, fmt.Errorf("source table %s is a %s: source prepare alters tables only; point source.table at the table", table, relkindName(root.kind))
	}
	for _, r := range tree.rels[1:] {
		if r.kind != "r" && r.kind != "p" {
			return nil, fmt.Errorf("partition %s of %s is a %s, which cannot carry the cursor index; source prepare cannot index %s",
				r.qualified(), table, relkindName(r.kind), table)
		}
	}
	var steps []PrepareStep
	xid, pos := src.Columns.TransactionID, src.Columns.Position
	switch typ, ok := tree.columns[xid]; {
	case xid == "" && src.Ordering != OrderPosition:
		return nil, fmt.Errorf("source.columns.transaction_id is empty: xid8 ordering needs the column (or set source.ordering: position)")
	case xid == "":
		// Position ordering without a transaction column: nothing to add.
	case !ok:
		steps = append(steps, xidStep(src, tree.rels))
	case typ != "xid8":
		return nil, fmt.Errorf("column %q of %s is %s, not xid8; rename it or map source.columns.transaction_id to a new column, which source prepare then adds", xid, table, typ)
	}
	switch typ, ok := tree.columns[pos]; {
	case !ok && !src.preset().AddsPosition:
		return nil, fmt.Errorf("source table %s has no column %q: map source.columns.position to the table's global position column", table, pos)
	case !ok && root.kind == "p":
		return nil, fmt.Errorf("source table %s has no column %q, and source prepare cannot add it: PostgreSQL adds no identity column to a partitioned table", table, pos)
	case !ok:
		st, err := positionStep(src, root, tree.indexes[root.oid])
		if err != nil {
			return nil, err
		}
		steps = append(steps, st)
	case typ != "bigint" && typ != "integer" && typ != "smallint":
		return nil, fmt.Errorf("column %q of %s is %s: the cursor's position must be an integer column", pos, table, typ)
	}
	idx, err := tree.planIndex(src)
	if err != nil {
		return nil, err
	}
	steps = append(steps, idx...)
	if notify {
		if !tree.notifyFunctionOK {
			steps = append(steps, functionStep())
		}
		want := append([]byte(channel), 0)
		switch tr, ok := tree.triggers[triggerNameFor(src)]; {
		case !ok:
			steps = append(steps, triggerStep(src, root, channel, false))
		case !tr.funcOK || !tr.enabled || tr.tgtype != statementAfterInsert || !bytes.Equal(tr.args, want):
			steps = append(steps, triggerStep(src, root, channel, true))
		}
	}
	return steps, nil
}

// planIndex plans the cursor index; see PlanPrepare.
func (t *tableTree) planIndex(src Source) ([]PrepareStep, error) {
	root := t.root()
	cols := src.cursorColumns()
	if t.serving(root.oid, cols) != nil {
		return nil, nil
	}
	name := indexNameFor(src)
	if p := t.ourIndexProblem(src, root, name, cols, root.kind == "p", 0); p != "" {
		return nil, errors.New(p)
	}
	if root.kind != "p" {
		what := "index the gap-safe cursor (built concurrently: writers are not blocked)"
		if src.Ordering == OrderPosition {
			what = "index the position cursor (built concurrently: writers are not blocked)"
		}
		return []PrepareStep{buildStep(root, name, cols, what)}, nil
	}
	var pl indexPlan
	ours := t.indexNamed(root, name)
	if ours == nil {
		pl.only = append(pl.only, onlyStep(root, name, cols))
	}
	if err := t.planPartitions(src, &pl, root, name, ours); err != nil {
		return nil, err
	}
	return slices.Concat(pl.only, pl.build, pl.attach), nil
}

// indexPlan collects a partitioned table's index steps in the order they
// run: every partitioned level's index first (top-down), so partitions
// created meanwhile get one; then the leaves' concurrent builds; then the
// attachments, bottom-up, so that each level turns valid once all below it
// are attached.
type indexPlan struct{ only, build, attach []PrepareStep }

// planPartitions plans, for each partition of rel, an index attached to
// rel's index pname (ix: nil when this plan creates it).
func (t *tableTree) planPartitions(src Source, pl *indexPlan, rel relation, pname string, ix *catIndex) error {
	cols := src.cursorColumns()
	for _, c := range t.children[rel.oid] {
		if ix != nil {
			if att := t.attachedTo(c, ix); att != nil {
				if att.usable() {
					continue
				}
				if c.kind == "p" { // its own partitions are not all attached yet
					if err := t.planPartitions(src, pl, c, att.name, att); err != nil {
						return err
					}
					continue
				}
				return fmt.Errorf("index %s.%s of partition %s is attached to %s.%s but INVALID; drop it (DROP INDEX %s) and re-run source prepare --apply",
					c.schema, att.name, c.qualified(), rel.schema, pname, pgx.Identifier{c.schema, att.name}.Sanitize())
			}
		}
		cname := indexNameFor(Source{Columns: src.Columns, Ordering: src.Ordering, oid: c.oid, schema: c.schema, name: c.name})
		if cand := t.attachable(c, cols, cname); cand != nil {
			if c.kind == "p" && !cand.usable() {
				if err := t.planPartitions(src, pl, c, cand.name, cand); err != nil {
					return err
				}
			}
			pl.attach = append(pl.attach, attachStep(rel, pname, c, cand.name))
			continue
		}
		var parent uint32
		if ix != nil {
			parent = ix.oid
		}
		if p := t.ourIndexProblem(src, c, cname, cols, true, parent); p != "" {
			return errors.New(p)
		}
		if c.kind == "p" {
			pl.only = append(pl.only, onlyStep(c, cname, cols))
			if err := t.planPartitions(src, pl, c, cname, nil); err != nil {
				return err
			}
		} else {
			pl.build = append(pl.build, buildStep(c, cname, cols, fmt.Sprintf("build the cursor index on partition %s (concurrently: writers are not blocked)", c.qualified())))
		}
		pl.attach = append(pl.attach, attachStep(rel, pname, c, cname))
	}
	return nil
}

// attachedTo returns c's index attached to ix, nil if none is.
func (t *tableTree) attachedTo(c relation, ix *catIndex) *catIndex {
	for _, ci := range t.indexes[c.oid] {
		if ci.parent == ix.oid {
			return ci
		}
	}
	return nil
}

// attachable returns an index of c that can be attached as it is: exactly
// prepare's definition, attached to nothing, and on a leaf valid; ours
// (named name) first, then a valid one.
func (t *tableTree) attachable(c relation, cols []string, name string) *catIndex {
	var best *catIndex
	score := func(ix *catIndex) int {
		s := 0
		if ix.usable() {
			s += 2
		}
		if ix.name == name {
			s++
		}
		return s
	}
	for _, ix := range t.indexes[c.oid] {
		if !ix.exactly(cols) || ix.parent != 0 {
			continue
		}
		if c.kind == "p" && ix.kind != "I" || c.kind != "p" && (ix.kind != "i" || !ix.usable()) {
			continue
		}
		if best == nil || score(ix) > score(best) {
			best = ix
		}
	}
	return best
}

// ApplyPrepareStep runs one step. A step that is not concurrent runs in
// its own transaction with lock_timeout set to lockTimeout (0: wait as
// long as it takes), so that it never queues the table's readers and
// writers behind it for longer: it then fails naming the sessions that
// held the lock, having changed nothing, and re-running prepare resumes
// from it. A concurrent build runs with lock_timeout and
// statement_timeout off, since it blocks no reader or writer while it
// waits and one cut short leaves an INVALID index behind.
func ApplyPrepareStep(ctx context.Context, pool *pgxpool.Pool, s PrepareStep, lockTimeout time.Duration) error {
	if s.Concurrent {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "SET lock_timeout = 0; SET statement_timeout = 0"); err != nil {
			conn.Release()
			return err
		}
		_, err = conn.Exec(ctx, s.SQL)
		// The session's settings must not outlive the step in the pool.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, rerr := conn.Exec(rctx, "RESET lock_timeout; RESET statement_timeout"); rerr != nil {
			_ = conn.Hijack().Close(rctx)
		} else {
			conn.Release()
		}
		return err
	}
	ms := lockTimeout.Milliseconds()
	if lockTimeout > 0 && ms == 0 {
		ms = 1
	}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", ms)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.SQL)
		return err
	})
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "55P03" {
		return fmt.Errorf("%w: %s", err, lockHolders(ctx, pool, s, lockTimeout))
	}
	return err
}

// lockHolders names the sessions holding a lock that conflicts with one
// the step takes, for the operator whose step timed out. Query texts are
// left out: they may hold data.
func lockHolders(ctx context.Context, pool *pgxpool.Pool, s PrepareStep, lockTimeout time.Duration) string {
	done := fmt.Sprintf("nothing of this step was applied: it did not get its lock within lock_timeout %s", lockTimeout)
	retry := "; end or wait out that transaction, or re-run with a longer --lock-timeout at a quieter time (re-running skips the steps already done)"
	schemas, names := make([]string, len(s.Holds)), make([]string, len(s.Holds))
	for i, h := range s.Holds {
		schemas[i], names[i] = h.Schema, h.Name
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	rows, err := pool.Query(ctx, `SELECT n.nspname::text, c.relname::text, l.mode, l.pid, coalesce(a.usename::text, ''),
			coalesce(a.application_name, ''), coalesce(a.state, ''), coalesce(extract(epoch FROM now() - a.xact_start), 0)::float8
		FROM pg_catalog.pg_locks l
		JOIN pg_catalog.pg_class c ON c.oid = l.relation
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'relation' AND l.granted AND l.pid IS DISTINCT FROM pg_backend_pid()
		  AND (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
		ORDER BY a.xact_start NULLS LAST, l.pid`, schemas, names)
	if err != nil {
		return done + " (the sessions holding it could not be listed: " + err.Error() + ")" + retry
	}
	defer rows.Close()
	var who []string
	for rows.Next() {
		var schema, name, mode, user, app, state string
		var pid *int32
		var age float64
		if err := rows.Scan(&schema, &name, &mode, &pid, &user, &app, &state, &age); err != nil {
			break
		}
		want := ""
		for _, h := range s.Holds {
			if h.Schema == schema && h.Name == name {
				want = h.Mode
			}
		}
		if !conflicts(want, mode) {
			continue
		}
		holder := "a prepared transaction (see pg_prepared_xacts)"
		if pid != nil {
			// Another role's state and transaction start are visible only
			// with pg_read_all_stats.
			about := "its state is visible only to pg_read_all_stats"
			if state != "" {
				about = fmt.Sprintf("%s, transaction open for %s", state, (time.Duration(age * float64(time.Second))).Round(time.Millisecond))
			}
			holder = fmt.Sprintf("pid %d (role %s, application %q, %s)", *pid, user, app, about)
		}
		who = append(who, fmt.Sprintf("%s holds %s on %s.%s", holder, modeName(mode), schema, name))
	}
	if len(who) == 0 {
		return done + " (no session held a conflicting lock any more when checked)" + retry
	}
	return done + "; " + strings.Join(who, "; ") + retry
}

func (r relation) size() string {
	s := formatBytes(r.bytes)
	switch {
	case r.rows >= 1.5:
		s += ", about " + formatCount(r.rows) + " rows"
	case r.rows > 0:
		s += ", about 1 row"
	}
	return s
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func formatCount(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.0fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}

// maxIdentLen is PostgreSQL's identifier limit (NAMEDATALEN - 1 bytes):
// a longer name is silently truncated.
const maxIdentLen = 63

// indexNameFor names the cursor index prepare creates on src:
// (transaction_id, position), or (position) under position ordering.
func indexNameFor(src Source) string {
	if src.Ordering == OrderPosition {
		return objectName(src, "_"+src.Columns.Position+"_idx", "_pos_idx")
	}
	p := src.preset()
	if p.CursorIndex != "" && src.relName() == p.Table[strings.LastIndexByte(p.Table, '.')+1:] &&
		src.Columns.TransactionID == p.Columns.TransactionID && src.Columns.Position == p.Columns.Position {
		return p.CursorIndex
	}
	return xidIndexName(src)
}

// xidIndexName names the (transaction_id, position) index.
func xidIndexName(src Source) string {
	return objectName(src, "_"+src.Columns.TransactionID+"_"+src.Columns.Position+"_idx", "_xid_idx")
}

// triggerNameFor names the NOTIFY trigger.
func triggerNameFor(src Source) string {
	return objectName(src, "_projectord_notify", "_projectord_notify")
}

// objectName is the table's name plus suffix when that fits in 63 bytes
// (the name earlier versions gave, so re-running prepare finds the objects
// it made). Otherwise it is the table's name cut short (at a character
// boundary) plus a hash of the qualified table and suffix, plus short: a
// name PostgreSQL keeps whole, that never equals the table's own (it is
// longer, or ends in a hash of itself), and that differs between tables
// whose names share the first bytes.
func objectName(src Source, suffix, short string) string {
	base := src.relName()
	if name := base + suffix; len(name) <= maxIdentLen {
		return name
	}
	for salt := byte(0); ; salt++ {
		h := sha256.Sum256([]byte(src.QualifiedName() + "\x00" + suffix + string([]byte{salt})))
		tail := "_" + hex.EncodeToString(h[:4]) + short
		name := cutUTF8(base, maxIdentLen-len(tail)) + tail
		if name != base {
			return name
		}
	}
}

// cutUTF8 shortens s to at most n bytes without splitting a character.
func cutUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// VerifyPrepared checks, after `source prepare --apply`, that every object
// it is meant to leave exists as it should: the xid8 column, the position
// column, a valid index that serves the reader (prepare's own or an
// equivalent one under any name; a failed CONCURRENTLY build leaves an
// INVALID index behind, and IF NOT EXISTS would skip it, or another
// relation of the same name, silently), and, with notify, the trigger.
// src must be resolved.
func VerifyPrepared(ctx context.Context, pool *pgxpool.Pool, src Source, notify bool) error {
	if !src.Resolved() {
		return fmt.Errorf("source table %s: not resolved", src.Table)
	}
	tree, err := loadTree(ctx, pool, src, true)
	if err != nil {
		return err
	}
	table := src.QualifiedName()
	switch typ, ok := tree.columns[src.Columns.TransactionID]; {
	case src.Columns.TransactionID == "" && src.Ordering == OrderPosition:
	case !ok:
		return fmt.Errorf("source prepare did not take effect: %s has no column %q", table, src.Columns.TransactionID)
	case typ != "xid8":
		return fmt.Errorf("source prepare did not take effect: column %q of %s is %s, not xid8; rename it or map source.columns.transaction_id to a new column", src.Columns.TransactionID, table, typ)
	}
	if _, ok := tree.columns[src.Columns.Position]; !ok {
		return fmt.Errorf("source prepare did not take effect: %s has no column %q", table, src.Columns.Position)
	}

	root, cols, idx := tree.root(), src.cursorColumns(), indexNameFor(src)
	if tree.serving(root.oid, cols) == nil {
		if p := tree.ourIndexProblem(src, root, idx, cols, root.kind == "p", 0); p != "" {
			return errors.New(p)
		}
		if tree.indexNamed(root, idx) == nil {
			return fmt.Errorf("source prepare did not take effect: index %s.%s does not exist", root.schema, idx)
		}
		return fmt.Errorf("index %s.%s on %s is INVALID: it is not attached on every partition yet (a partition created while prepare ran?); re-run source prepare --apply",
			root.schema, idx, table)
	}

	if notify {
		trig := triggerNameFor(src)
		tr, ok := tree.triggers[trig]
		switch {
		case !ok:
			return fmt.Errorf("source prepare did not take effect: trigger %s on %s does not exist", trig, table)
		case !tr.funcOK || !tr.enabled:
			return fmt.Errorf("trigger %s on %s does not call projectord.notify_events() or is disabled", trig, table)
		}
	}
	return nil
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
