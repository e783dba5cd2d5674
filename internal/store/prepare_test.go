package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
	"github.com/projectord/projectord/internal/store/storeddl"
	"github.com/projectord/projectord/internal/testsupport"
)

// applyTimeout bounds one step: generous, it catches hangs.
const applyTimeout = 2 * time.Minute

// freshDB is a migrated database with no events table.
func freshDB(t *testing.T) (context.Context, *pgxpool.Pool) {
	t.Helper()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = store.Migrate(ctx, pool, "test")
	require.NoError(t, err)
	return ctx, pool
}

func presetSource(t *testing.T, ctx context.Context, pool *pgxpool.Pool, preset string) store.Source {
	t.Helper()
	p := store.Presets[preset]
	src, err := store.Source{Preset: preset, Table: p.Table, Columns: p.Columns, Ordering: store.OrderXID8}.Resolve(ctx, pool)
	require.NoError(t, err)
	return src
}

// checkHolds runs a step that is not concurrent in a transaction it rolls
// back and checks its Holds against pg_locks: on every relation that
// existed before it (TOAST tables aside, which nobody locks but through
// their table), the strongest lock it took above ACCESS SHARE is the one
// claimed, and it took none it does not claim.
func checkHolds(t *testing.T, ctx context.Context, pool *pgxpool.Pool, s store.PrepareStep) {
	t.Helper()
	require.False(t, s.Concurrent)
	got := map[string]string{}
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var before []uint32
		if err := tx.QueryRow(ctx, `SELECT array_agg(oid) FROM pg_class
			WHERE relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, 'pg_toast'::regnamespace)`).Scan(&before); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.SQL); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT n.nspname || '.' || c.relname, l.mode FROM pg_locks l
			JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND c.oid = ANY($1)`, before)
		if err != nil {
			return err
		}
		for rows.Next() {
			var rel, mode string
			if err := rows.Scan(&rel, &mode); err != nil {
				return err
			}
			if store.LockStrength(mode) > store.LockStrength(got[rel]) {
				got[rel] = mode
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return errRollback
	})
	require.ErrorIs(t, err, errRollback, s.SQL)
	for rel, mode := range got {
		if mode == "AccessShareLock" {
			delete(got, rel)
		}
	}
	want := map[string]string{}
	for _, h := range s.Holds {
		want[h.Schema+"."+h.Name] = h.Mode
	}
	require.Equal(t, want, got, "locks of %s (claimed: %s)", s.SQL, s.Locks)
	for _, h := range s.Holds {
		require.Contains(t, s.Locks, spelled(h.Mode)+" on ", "the text names the mode of %s", h.Schema+"."+h.Name)
	}
}

// spelled is a pg_locks mode as the documentation spells it.
func spelled(mode string) string {
	var b strings.Builder
	for i, r := range strings.TrimSuffix(mode, "Lock") {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
		}
		b.WriteString(strings.ToUpper(string(r)))
	}
	return b.String()
}

var errRollback = errors.New("rolled back on purpose")

// applyChecked checks every step's locks (see checkHolds) and applies it.
func applyChecked(t *testing.T, ctx context.Context, pool *pgxpool.Pool, steps []store.PrepareStep) {
	t.Helper()
	for _, s := range steps {
		require.NotEmpty(t, s.Why)
		require.NotEmpty(t, s.Locks, s.SQL)
		if !s.Concurrent {
			checkHolds(t, ctx, pool, s)
		}
		actx, cancel := context.WithTimeout(ctx, applyTimeout)
		err := store.ApplyPrepareStep(actx, pool, s, 10*time.Second)
		cancel()
		require.NoError(t, err, s.SQL)
	}
}

func stepsWith(steps []store.PrepareStep, prefix string) []store.PrepareStep {
	var out []store.PrepareStep
	for _, s := range steps {
		if strings.HasPrefix(s.SQL, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// emmettTable creates Emmett's schema as its migration does, a second
// partition the way Emmett creates one, and events: a few through
// Emmett's own append function, and 20,000 more in the default partition
// so the planner has a table worth an index.
func emmettTable(t *testing.T, ctx context.Context, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(ctx, storeddl.Emmett)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `SELECT emt_add_partition('tenant_b')`)
	require.NoError(t, err)
	for i, part := range []string{"emt:default", "tenant_b"} {
		_, err = pool.Exec(ctx, `SELECT emt_append_to_stream(ARRAY[$1], ARRAY['{"n": 1}'::jsonb], ARRAY['{}'::jsonb], ARRAY['1'],
			ARRAY['Opened'], ARRAY['E'], $2, 'account', NULL, $3)`, fmt.Sprintf("m-%d", i), fmt.Sprintf("account-%d", i), part)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO emt_messages (stream_id, stream_position, partition, message_data, message_metadata,
			message_schema_version, message_type, message_kind, message_id, transaction_id)
		SELECT 'bulk-' || (g % 100), g / 100 + 1, 'emt:default', '{}', '{}', '1', 'Deposited', 'E', 'bulk-' || g, pg_current_xact_id()
		FROM generate_series(1, 20000) g;
		ANALYZE emt_messages`)
	require.NoError(t, err)
}

// TestPrepareEmmettPartitionedTable: Emmett's emt_messages is partitioned
// by partition and then by is_archived. Prepare adds no column (Emmett
// has transaction_id xid8, without a default, which it keeps), indexes
// every level ON ONLY, builds the leaves concurrently and attaches them
// bottom-up; every lock it claims is the one it takes. Afterwards the
// cursor index check passes, a partition Emmett creates later has the
// index, the reader's batch is an index scan without a sort, and a new
// plan is empty.
func TestPrepareEmmettPartitionedTable(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	emmettTable(t, ctx, pool)
	src := presetSource(t, ctx, pool, "emmett")

	err := store.CheckCursorIndex(ctx, pool, src)
	require.ErrorIs(t, err, store.ErrNoCursorIndex)
	require.Contains(t, err.Error(), "public.emt_messages")
	require.Contains(t, err.Error(), "projectord source prepare --apply")
	require.Contains(t, err.Error(), `CREATE INDEX IF NOT EXISTS "idx_messages_transaction_id_global_position" ON ONLY "public"."emt_messages"`)

	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, stepsWith(steps, "ALTER TABLE"), "Emmett's xid8 column is used as it is")
	only, builds, attaches := stepsWith(steps, "CREATE INDEX IF NOT EXISTS"), stepsWith(steps, "CREATE INDEX CONCURRENTLY"), stepsWith(steps, "ALTER INDEX")
	require.Len(t, only, 3, "emt_messages and its two list partitions")
	require.Len(t, builds, 4, "an active and an archived leaf per partition")
	require.Len(t, attaches, 6)
	require.Len(t, steps, 13)
	require.Contains(t, steps[0].SQL, `ON ONLY "public"."emt_messages" ("transaction_id", "global_position")`)
	for i, s := range steps {
		// ON ONLY first, then builds, then attachments.
		switch {
		case i < 3:
			require.Contains(t, s.SQL, "ON ONLY")
		case i < 7:
			require.True(t, s.Concurrent, s.SQL)
		default:
			require.Contains(t, s.SQL, "ATTACH PARTITION")
		}
	}
	// Bottom-up: a level's index is attached after every index below it.
	for i, s := range attaches {
		child := s.SQL[strings.Index(s.SQL, "ATTACH PARTITION ")+len("ATTACH PARTITION "):]
		for _, later := range attaches[i+1:] {
			parent := strings.TrimPrefix(later.SQL[:strings.Index(later.SQL, " ATTACH")], "ALTER INDEX ")
			require.NotEqual(t, child, parent, "%s is attached to after %s", parent, later.SQL)
		}
	}
	for _, s := range steps {
		for _, name := range strings.Fields(s.SQL) {
			if strings.HasPrefix(name, `"public"."`) || strings.HasPrefix(name, `"emt_`) {
				require.LessOrEqual(t, len(strings.Trim(name[strings.LastIndex(name, `"."`)+1:], `".`)), 63, name)
			}
		}
	}

	applyChecked(t, ctx, pool, steps)
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
	require.NoError(t, store.VerifyPrepared(ctx, pool, src, false))
	again, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, again, "nothing left to do")
	var def *string
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = 'emt_messages'::regclass AND a.attname = 'transaction_id'`).Scan(&def))
	require.Nil(t, def, "Emmett's transaction_id keeps having no default")

	// A partition Emmett creates afterwards gets the index by itself.
	_, err = pool.Exec(ctx, `SELECT emt_add_partition('tenant_c')`)
	require.NoError(t, err)
	leaf := store.Source{Table: "public.emt_messages_tenant_c_active", Columns: src.Columns, Ordering: store.OrderXID8}
	require.NoError(t, store.CheckCursorIndex(ctx, pool, leaf), "the new leaf has a valid cursor index")
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src), "and the parent's stays valid")
	again, err = store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, again)

	// The reader's batch walks the default active leaf's index: no sort.
	q, err := store.ReadSQL(ctx, pool, src, store.Filter{})
	require.NoError(t, err)
	rows, err := pool.Query(ctx, "EXPLAIN (COSTS OFF) "+q, uint64(0), int64(0), 500)
	require.NoError(t, err)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	text := strings.Join(plan, "\n")
	leafIndex := store.CursorIndexName(store.Source{Table: "public.emt_messages_emt_default_active", Columns: src.Columns})
	require.Contains(t, text, "Index Scan using "+leafIndex+" on emt_messages_emt_default_active", text)
	require.NotContains(t, text, "Sort", text)

	// Emmett's writer still appends, and the reader reads it.
	_, err = pool.Exec(ctx, `SELECT emt_append_to_stream(ARRAY['m-late'], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb], ARRAY['1'],
		ARRAY['Closed'], ARRAY['E'], 'account-0', 'account', 1, 'emt:default')`)
	require.NoError(t, err)
	r := store.NewReader(pool, src, 10*time.Second)
	testsupport.Until(t, "the late event is read", time.Minute, func() bool {
		head, ok, err := r.Head(ctx)
		require.NoError(t, err)
		if !ok {
			return false
		}
		evs, err := r.Read(ctx, store.Cursor{XID: head.XID, Position: head.Position - 1}, store.Filter{}, 10, nil)
		require.NoError(t, err)
		return len(evs) == 1 && evs[0].Type == "Closed"
	})
}

// TestPrepareResumesAnInterruptedPartitionedPrepare: after the first ON
// ONLY statements and one leaf's build, the parent index is INVALID; the
// check says so, and a new plan holds only what is left, using the leaf
// index already built.
func TestPrepareResumesAnInterruptedPartitionedPrepare(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	emmettTable(t, ctx, pool)
	src := presetSource(t, ctx, pool, "emmett")
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 13)
	applyChecked(t, ctx, pool, steps[:4]) // three ON ONLY, one build
	err = store.CheckCursorIndex(ctx, pool, src)
	require.ErrorIs(t, err, store.ErrNoCursorIndex)
	require.Contains(t, err.Error(), "is INVALID: it is not yet attached on every partition")
	require.Error(t, store.VerifyPrepared(ctx, pool, src, false))

	rest, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Equal(t, steps[4:], rest, "exactly the steps not yet run")
	applyChecked(t, ctx, pool, rest)
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
}

// TestPrepareReusesAMatchingPartitionIndex: a leaf that already has an
// index of prepare's definition under its own name gets it attached, not
// a second one built.
func TestPrepareReusesAMatchingPartitionIndex(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	emmettTable(t, ctx, pool)
	_, err := pool.Exec(ctx, `CREATE INDEX mine ON emt_messages_tenant_b_active (transaction_id, global_position)`)
	require.NoError(t, err)
	src := presetSource(t, ctx, pool, "emmett")
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, stepsWith(steps, "CREATE INDEX CONCURRENTLY"), 3)
	found := false
	for _, s := range steps {
		found = found || strings.HasSuffix(s.SQL, `ATTACH PARTITION "public"."mine"`)
	}
	require.True(t, found, "mine is attached")
	applyChecked(t, ctx, pool, steps)
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
}

// eventcoreTriggers lists the table's triggers as the catalogue has them.
func eventcoreTriggers(t *testing.T, ctx context.Context, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT tgname || ' ' || tgfoid::regprocedure::text || ' ' || tgtype::text || ' ' || tgenabled::text
		FROM pg_trigger WHERE tgrelid = 'eventcore_events'::regclass AND NOT tgisinternal ORDER BY tgname`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return got
}

// TestPrepareEventCoreTable: eventcore_events has neither an xid8 column
// nor a global position, and triggers that assign stream versions and
// raise on UPDATE and DELETE. Prepare adds both columns (the position as
// an identity, which numbers the existing rows in one rewrite and fires no
// trigger) and the index. The rows get distinct positions in their
// streams' order, the triggers are unchanged and still raise, the store's
// writer still works, and a new plan is empty.
func TestPrepareEventCoreTable(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, storeddl.EventCore)
	require.NoError(t, err)
	// Time-ordered ids, as eventcore's uuid v7 are: its own order.
	for i := range 12 {
		_, err := pool.Exec(ctx, `INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data)
			VALUES ((lpad(to_hex($2::int), 8, '0') || '-0000-7000-8000-000000000000')::uuid, $1, 'E', '{}')`,
			fmt.Sprintf("s%d", i%3), i+1)
		require.NoError(t, err)
	}
	triggers := eventcoreTriggers(t, ctx, pool)
	require.Len(t, triggers, 3)
	src := presetSource(t, ctx, pool, "eventcore")
	require.ErrorIs(t, src.Check(ctx, pool), store.ErrNoXID8)

	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 3)
	require.Contains(t, steps[0].SQL, `ADD COLUMN IF NOT EXISTS "transaction_id" xid8 NOT NULL DEFAULT '1'`)
	require.Equal(t, "SET LOCAL synchronize_seqscans = off;\n"+
		`CLUSTER "public"."eventcore_events" USING "eventcore_events_pkey";
ALTER TABLE "public"."eventcore_events" ADD COLUMN "global_position" bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE "public"."eventcore_events" SET WITHOUT CLUSTER`, steps[1].SQL)
	require.Contains(t, steps[1].Locks, "full rewrite")
	require.Equal(t, `CREATE INDEX CONCURRENTLY IF NOT EXISTS "eventcore_events_transaction_id_global_position_idx" ON "public"."eventcore_events" ("transaction_id", "global_position")`, steps[2].SQL)
	applyChecked(t, ctx, pool, steps)

	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
	require.NoError(t, store.VerifyPrepared(ctx, pool, src, false))
	require.NoError(t, src.Check(ctx, pool))
	again, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, again)
	require.Equal(t, triggers, eventcoreTriggers(t, ctx, pool), "triggers unchanged")

	var rowsN, distinct, outOfStreamOrder int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT global_position),
			count(*) FILTER (WHERE stream_version <> rn)
		FROM (SELECT *, row_number() OVER (PARTITION BY stream_id ORDER BY global_position) rn FROM eventcore_events) e`).
		Scan(&rowsN, &distinct, &outOfStreamOrder))
	require.Equal(t, 12, rowsN)
	require.Equal(t, 12, distinct, "every existing row has its own position")
	require.Zero(t, outOfStreamOrder, "positions follow each stream's versions")

	for _, q := range []string{`UPDATE eventcore_events SET event_type = 'X' WHERE stream_id = 's0'`, `DELETE FROM eventcore_events WHERE stream_id = 's0'`} {
		_, err := pool.Exec(ctx, q)
		pgErr, ok := errors.AsType[*pgconn.PgError](err)
		require.True(t, ok, "%s must raise: %v", q, err)
		require.Equal(t, "P0002", pgErr.Code, q)
	}

	// eventcore's writer: the version trigger still assigns the version,
	// the defaults give the position and the writer's xid.
	var version, position int64
	var xid uint64
	require.NoError(t, pool.QueryRow(ctx, `INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data)
		VALUES (gen_random_uuid(), 's0', 'E', '{}') RETURNING stream_version, global_position, transaction_id`).Scan(&version, &position, &xid))
	require.Equal(t, int64(5), version)
	require.Equal(t, int64(13), position)
	require.Greater(t, xid, uint64(1))
	r := store.NewReader(pool, src, 10*time.Second)
	testsupport.Until(t, "all 13 events read", time.Minute, func() bool {
		evs, err := r.Read(ctx, store.Cursor{}, store.Filter{}, 100, nil)
		require.NoError(t, err)
		return len(evs) == 13
	})
}

// TestPreparePartitionedTableWithoutXID8: on a two-level partitioned table
// without the column, the xid8 step locks the table and every partition
// (ALTER TABLE recurses), and the trigger step the parent alone.
func TestPreparePartitionedTableWithoutXID8(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, `CREATE TABLE ev (global_position bigint GENERATED ALWAYS AS IDENTITY, tenant text NOT NULL, archived bool NOT NULL DEFAULT false,
			stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
			created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant, archived, global_position)) PARTITION BY LIST (tenant);
		CREATE TABLE ev_a PARTITION OF ev FOR VALUES IN ('a') PARTITION BY LIST (archived);
		CREATE TABLE ev_a_live PARTITION OF ev_a FOR VALUES IN (false);
		CREATE TABLE ev_a_old PARTITION OF ev_a FOR VALUES IN (true);
		CREATE TABLE ev_b PARTITION OF ev FOR VALUES IN ('b');
		INSERT INTO ev (tenant, stream_id, stream_version, event_type, data) SELECT t, 's', g, 'E', '{}' FROM generate_series(1, 10) g, unnest(ARRAY['a', 'b']) t`)
	require.NoError(t, err)
	src, err := store.Source{Table: "ev", Columns: store.NativeColumns, Ordering: store.OrderXID8}.Resolve(ctx, pool)
	require.NoError(t, err)
	steps, err := store.PlanPrepare(ctx, pool, src, true, "chan")
	require.NoError(t, err)
	require.Contains(t, steps[0].SQL, "ADD COLUMN IF NOT EXISTS")
	require.Contains(t, steps[0].Locks, "each of its 4 partitions")
	require.Len(t, steps[0].Holds, 5)
	require.Equal(t, "the NOTIFY trigger's function", steps[len(steps)-2].Why)
	require.Contains(t, steps[len(steps)-1].SQL, "CREATE TRIGGER")
	applyChecked(t, ctx, pool, steps)
	require.NoError(t, store.VerifyPrepared(ctx, pool, src, true))
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
	again, err := store.PlanPrepare(ctx, pool, src, true, "chan")
	require.NoError(t, err)
	require.Empty(t, again)

	// A trigger of prepare's name that is not prepare's is replaced, and
	// that step claims the ACCESS EXCLUSIVE lock DROP TRIGGER takes.
	again, err = store.PlanPrepare(ctx, pool, src, true, "other")
	require.NoError(t, err)
	require.Len(t, again, 1)
	require.Contains(t, again[0].SQL, "DROP TRIGGER IF EXISTS")
	applyChecked(t, ctx, pool, again)
	again, err = store.PlanPrepare(ctx, pool, src, true, "other")
	require.NoError(t, err)
	require.Empty(t, again)
}

// TestPrepareNothingToDoOnANativeTable: the native layout has everything;
// with notify only the function and trigger are missing, and once they
// exist nothing is.
func TestPrepareNothingToDoOnANativeTable(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	src, err := tb.src.Resolve(tb.ctx, tb.pool)
	require.NoError(t, err)
	steps, err := store.PlanPrepare(tb.ctx, tb.pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, steps)
	steps, err = store.PlanPrepare(tb.ctx, tb.pool, src, true, "projectord_events")
	require.NoError(t, err)
	require.Len(t, steps, 2)
	applyChecked(t, tb.ctx, tb.pool, steps)
	steps, err = store.PlanPrepare(tb.ctx, tb.pool, src, true, "projectord_events")
	require.NoError(t, err)
	require.Empty(t, steps)
}

// TestCheckCursorIndex: the check accepts any index that serves the
// reader, under any name, and refuses, naming the index prepare creates
// and how, everything that does not.
func TestCheckCursorIndex(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	src, err := tb.src.Resolve(tb.ctx, tb.pool)
	require.NoError(t, err)
	require.NoError(t, store.CheckCursorIndex(tb.ctx, tb.pool, src), "the native table's own index")
	exec := func(q string) {
		t.Helper()
		_, err := tb.pool.Exec(tb.ctx, q)
		require.NoError(t, err)
	}
	exec(`DROP INDEX events_transaction_id_global_position_idx`)
	err = store.CheckCursorIndex(tb.ctx, tb.pool, src)
	require.ErrorIs(t, err, store.ErrNoCursorIndex)
	require.Contains(t, err.Error(), `public.events has no valid btree index on (transaction_id, global_position)`)
	require.Contains(t, err.Error(), `CREATE INDEX CONCURRENTLY "events_transaction_id_global_position_idx" ON "public"."events" ("transaction_id", "global_position")`)

	for _, bad := range []string{
		`CREATE INDEX wrong ON events (transaction_id DESC, global_position)`,
		`CREATE INDEX wrong ON events (transaction_id, global_position) WHERE stream_id <> ''`,
		`CREATE INDEX wrong ON events USING hash (transaction_id)`,
		`CREATE INDEX wrong ON events (global_position, transaction_id)`,
		`CREATE INDEX wrong ON events (transaction_id)`,
	} {
		exec(bad)
		require.ErrorIs(t, store.CheckCursorIndex(tb.ctx, tb.pool, src), store.ErrNoCursorIndex, bad)
		exec(`DROP INDEX wrong`)
	}

	// Another name, more columns: it serves the ORDER BY all the same.
	exec(`CREATE INDEX mine ON events (transaction_id, global_position) INCLUDE (event_type)`)
	require.NoError(t, store.CheckCursorIndex(tb.ctx, tb.pool, src))
	require.NoError(t, store.VerifyPrepared(tb.ctx, tb.pool, src, false), "VerifyPrepared accepts it too")
	steps, err := store.PlanPrepare(tb.ctx, tb.pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, steps, "and prepare builds no second one")
	exec(`DROP INDEX mine; CREATE UNIQUE INDEX mine ON events (transaction_id, global_position, stream_id)`)
	require.NoError(t, store.CheckCursorIndex(tb.ctx, tb.pool, src))
	exec(`DROP INDEX mine`)

	// Position ordering needs an index leading with the position: the
	// primary key is one.
	pos := tb.src
	pos.Ordering = store.OrderPosition
	pos, err = pos.Resolve(tb.ctx, tb.pool)
	require.NoError(t, err)
	require.NoError(t, store.CheckCursorIndex(tb.ctx, tb.pool, pos))
	exec(`ALTER TABLE events DROP CONSTRAINT events_pkey`)
	err = store.CheckCursorIndex(tb.ctx, tb.pool, pos)
	require.ErrorIs(t, err, store.ErrNoCursorIndex)
	require.Contains(t, err.Error(), `("global_position")`)
	steps, err = store.PlanPrepare(tb.ctx, tb.pool, pos, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 1)
	require.Equal(t, `CREATE INDEX CONCURRENTLY IF NOT EXISTS "events_global_position_idx" ON "public"."events" ("global_position")`, steps[0].SQL)
	// Under position ordering a mapped transaction column that is missing
	// is still added (switching to xid8 then needs only its index), and an
	// unmapped one is not.
	pos.Columns.TransactionID = "txid"
	steps, err = store.PlanPrepare(tb.ctx, tb.pool, pos, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 2)
	require.Contains(t, steps[0].SQL, `ADD COLUMN IF NOT EXISTS "txid" xid8`)
	pos.Columns.TransactionID = ""
	steps, err = store.PlanPrepare(tb.ctx, tb.pool, pos, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 1)
	applyChecked(t, tb.ctx, tb.pool, steps)
	require.NoError(t, store.VerifyPrepared(tb.ctx, tb.pool, pos, false))
	require.NoError(t, store.CheckCursorIndex(tb.ctx, tb.pool, pos))
}

// TestCheckCursorIndexNamesAnInvalidIndex: a concurrent build of
// prepare's index that is still running, and then one cancelled, which
// leaves it INVALID, are named as such, with what to do.
func TestCheckCursorIndexNamesAnInvalidIndex(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	src, err := tb.src.Resolve(tb.ctx, tb.pool)
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `DROP INDEX events_transaction_id_global_position_idx`)
	require.NoError(t, err)
	open, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = open.Rollback(context.WithoutCancel(tb.ctx)) }()
	tb.insert(t, "s", "A", "{}")
	_, err = open.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('open', 1, 'A', '{}')`)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := tb.pool.Exec(tb.ctx, `CREATE INDEX CONCURRENTLY events_transaction_id_global_position_idx ON events (transaction_id, global_position)`)
		done <- err
	}()
	var pid int32
	testsupport.Until(t, "the build waits for the open transaction", time.Minute, func() bool {
		return tb.pool.QueryRow(tb.ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'`).Scan(&pid) == nil
	})
	err = store.CheckCursorIndex(tb.ctx, tb.pool, src)
	require.ErrorIs(t, err, store.ErrNoCursorIndex)
	require.Contains(t, err.Error(), fmt.Sprintf("index public.events_transaction_id_global_position_idx on public.events is INVALID: it is being built concurrently by pid %d", pid))

	_, err = tb.pool.Exec(tb.ctx, `SELECT pg_cancel_backend($1)`, pid)
	require.NoError(t, err)
	select {
	case err := <-done:
		require.Error(t, err, "cancelled")
	case <-time.After(applyTimeout):
		t.Fatal("the cancelled build did not end")
	}
	err = store.CheckCursorIndex(tb.ctx, tb.pool, src)
	require.ErrorIs(t, err, store.ErrNoCursorIndex)
	require.Contains(t, err.Error(), "index public.events_transaction_id_global_position_idx on public.events is INVALID: building it concurrently failed")
	require.Contains(t, err.Error(), `DROP INDEX CONCURRENTLY "public"."events_transaction_id_global_position_idx"`)
	_, err = store.PlanPrepare(tb.ctx, tb.pool, src, false, "")
	require.ErrorContains(t, err, "is INVALID", "prepare stops rather than skip it")
}

// TestPrepareRefusesAnInvalidIndexOfItsName: IF NOT EXISTS would skip it,
// so the plan stops, naming it and how to drop it.
func TestPrepareRefusesAnInvalidIndexOfItsName(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, `CREATE TABLE events (global_position bigint NOT NULL, transaction_id xid8 NOT NULL DEFAULT '1',
		stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
		created_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO events (global_position, stream_id, stream_version, event_type, data) VALUES (1, 's', 1, 'A', '{}'), (1, 's', 2, 'A', '{}')`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY events_transaction_id_global_position_idx ON events (transaction_id, global_position)`)
	require.Error(t, err)
	src, err := store.Source{Table: "events", Columns: store.NativeColumns}.Resolve(ctx, pool)
	require.NoError(t, err)
	_, err = store.PlanPrepare(ctx, pool, src, false, "")
	require.ErrorContains(t, err, "events_transaction_id_global_position_idx on public.events is INVALID: building it concurrently failed")
	require.ErrorContains(t, err, `DROP INDEX CONCURRENTLY "public"."events_transaction_id_global_position_idx"`)
}

// TestConcurrentBuildLetsWritersGoOn backs the concurrent build's claim:
// while it waits for a writer's open transaction, it holds SHARE UPDATE
// EXCLUSIVE on the table and nothing stronger, and another writer inserts
// meanwhile.
func TestConcurrentBuildLetsWritersGoOn(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, `CREATE TABLE events (global_position bigint GENERATED ALWAYS AS IDENTITY, transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
		stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
		created_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	src, err := store.Source{Table: "events", Columns: store.NativeColumns}.Resolve(ctx, pool)
	require.NoError(t, err)
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 1)
	require.True(t, steps[0].Concurrent)

	open, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = open.Rollback(context.WithoutCancel(ctx)) }()
	_, err = open.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('open', 1, 'A', '{}')`)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() { done <- store.ApplyPrepareStep(ctx, pool, steps[0], time.Second) }()
	var pid int32
	testsupport.Until(t, "the build waits for the open transaction", time.Minute, func() bool {
		err := pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND query LIKE 'CREATE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'`).Scan(&pid)
		return err == nil
	})
	var strongest string
	require.NoError(t, pool.QueryRow(ctx, `SELECT mode FROM pg_locks WHERE pid = $1 AND locktype = 'relation' AND granted
		AND relation = 'events'::regclass`, pid).Scan(&strongest))
	require.Equal(t, steps[0].Holds[0].Mode, strongest)
	require.Equal(t, "public.events", steps[0].Holds[0].Schema+"."+steps[0].Holds[0].Name)

	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = pool.Exec(ictx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('other', 1, 'A', '{}')`)
	require.NoError(t, err, "a writer is not blocked by the build")
	select {
	case err := <-done:
		t.Fatalf("the build finished before the open transaction ended: %v", err)
	default:
	}
	require.NoError(t, open.Commit(ctx))
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(applyTimeout):
		t.Fatal("the build did not finish after the open transaction ended")
	}
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
}

// TestApplyPrepareStepLockTimeoutNamesTheHolder: a step that cannot get
// its lock within the timeout changes nothing and names the session that
// holds the lock, so writers never queue behind prepare for longer.
func TestApplyPrepareStepLockTimeoutNamesTheHolder(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, `CREATE TABLE legacy (global_position bigint GENERATED ALWAYS AS IDENTITY, stream_id text NOT NULL,
		stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb, created_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	src, err := store.Source{Table: "legacy", Columns: store.NativeColumns}.Resolve(ctx, pool)
	require.NoError(t, err)
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 2)

	holder, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer holder.Release()
	var holderPID int32
	_, err = holder.Exec(ctx, `SET application_name = 'lock-holder'`)
	require.NoError(t, err)
	require.NoError(t, holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&holderPID))
	_, err = holder.Exec(ctx, `BEGIN; SELECT count(*) FROM legacy`)
	require.NoError(t, err)

	err = store.ApplyPrepareStep(ctx, pool, steps[0], 200*time.Millisecond)
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, "55P03", pgErr.Code)
	require.Contains(t, err.Error(), "nothing of this step was applied")
	require.Contains(t, err.Error(), fmt.Sprintf(`pid %d (role `, holderPID))
	require.Contains(t, err.Error(), `application "lock-holder", idle in transaction`)
	require.Contains(t, err.Error(), "holds ACCESS SHARE on public.legacy")
	var cols int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = 'legacy'::regclass AND attname = 'transaction_id'`).Scan(&cols))
	require.Zero(t, cols)

	_, err = holder.Exec(ctx, `COMMIT`)
	require.NoError(t, err)
	require.NoError(t, store.ApplyPrepareStep(ctx, pool, steps[0], 200*time.Millisecond))
}

// TestPrepareEventCorePositionsStartAtTheFirstBlock: the identity rewrite
// numbers rows in the order its sequential scan meets them. On a table
// larger than a quarter of shared_buffers, PostgreSQL starts a
// sequential scan where the previous one of that table stopped
// (synchronize_seqscans), so after an ad-hoc lookup that stopped
// mid-table the rewrite would give every stream's later events lower
// positions than its first ones, and projectors would apply them first.
func TestPrepareEventCorePositionsStartAtTheFirstBlock(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, storeddl.EventCore)
	require.NoError(t, err)
	// eventcore's version trigger numbers each stream in insertion order;
	// the padding makes the table larger than a quarter of the test
	// cluster's 128MB of shared_buffers.
	_, err = pool.Exec(ctx, `INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data)
		SELECT (lpad(to_hex(g), 8, '0') || '-0000-7000-8000-000000000000')::uuid, 's' || (g % 50), 'E',
			jsonb_build_object('n', g, 'pad', repeat('x', 900)) FROM generate_series(1, 40000) g`)
	require.NoError(t, err)
	var blocks, buffers int64
	require.NoError(t, pool.QueryRow(ctx, `SELECT pg_relation_size('eventcore_events') / current_setting('block_size')::int,
		(SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers')`).Scan(&blocks, &buffers))
	require.Greater(t, blocks, buffers/4, "the table must be large enough for synchronized scans")
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (event_data->>'n')::int FROM eventcore_events WHERE event_data->>'n' = '25000' LIMIT 1`).Scan(&n))

	src := presetSource(t, ctx, pool, "eventcore")
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	for _, s := range steps {
		require.NoError(t, store.ApplyPrepareStep(ctx, pool, s, 10*time.Second), s.SQL)
	}
	var first, outOfStreamOrder int
	require.NoError(t, pool.QueryRow(ctx, `SELECT (event_data->>'n')::int FROM eventcore_events ORDER BY global_position LIMIT 1`).Scan(&first))
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE stream_version <> rn) FROM
		(SELECT stream_version, row_number() OVER (PARTITION BY stream_id ORDER BY global_position) rn FROM eventcore_events) e`).Scan(&outOfStreamOrder))
	require.Equal(t, 1, first, "the first event written gets the first position")
	require.Zero(t, outOfStreamOrder, "positions follow each stream's versions")
}

// TestPrepareEmmettIndexIsTheOneEmmettsMigrationAdds: Emmett 0.42.4 and
// 0.43 create the cursor index themselves, on the partitioned table and
// so non-concurrently, under a SHARE lock on every leaf that stops
// Emmett's writers for the whole build. Prepare gives the index Emmett's
// name, so that an upgrade after prepare finds it and builds no second one.
func TestPrepareEmmettIndexIsTheOneEmmettsMigrationAdds(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	emmettTable(t, ctx, pool)
	src := presetSource(t, ctx, pool, "emmett")
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	applyChecked(t, ctx, pool, steps)
	require.NoError(t, store.VerifyPrepared(ctx, pool, src, false))

	// Emmett 0.42.4's migration, as event-driven-io/emmett
	// src/packages/emmett-postgresql/src/eventStore/schema/migrations/0_42_4/index.ts
	// at dc0b5ac16debb048645fe913d03f070c4fe3b03d runs it (0.43.0's creates
	// the same index under the same name).
	_, err = pool.Exec(ctx, `
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'emt_messages') THEN
    EXECUTE 'CREATE INDEX IF NOT EXISTS idx_messages_global_position
      ON emt_messages(global_position)';

    EXECUTE 'CREATE INDEX IF NOT EXISTS idx_messages_transaction_id_global_position
      ON emt_messages(transaction_id, global_position)';
  END IF;
END $$;
`)
	require.NoError(t, err)
	var cursorIndexes int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_indexes
		WHERE schemaname = 'public' AND tablename = 'emt_messages_emt_default_active'
		  AND indexdef LIKE '% USING btree (transaction_id, global_position)'`).Scan(&cursorIndexes))
	require.Equal(t, 1, cursorIndexes, "Emmett's migration found prepare's index and built no second one")
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
	again, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, again)
}

// TestPreparePartitionsOfEveryShape: a partitioned partition with no
// partitions of its own, and a partition created apart, with its columns
// in another order and a dropped column, then attached: prepare indexes
// and attaches them all, and the table's index turns valid.
func TestPreparePartitionsOfEveryShape(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, `CREATE TABLE ev (global_position bigint GENERATED ALWAYS AS IDENTITY, tenant text NOT NULL,
			transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
			stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
			created_at timestamptz NOT NULL DEFAULT now()) PARTITION BY LIST (tenant);
		CREATE TABLE ev_empty PARTITION OF ev FOR VALUES IN ('e') PARTITION BY LIST (stream_id);
		CREATE TABLE ev_odd (junk int, data jsonb NOT NULL, metadata jsonb, created_at timestamptz NOT NULL DEFAULT now(),
			event_type text NOT NULL, stream_version bigint NOT NULL, stream_id text NOT NULL,
			transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), tenant text NOT NULL, global_position bigint NOT NULL);
		ALTER TABLE ev_odd DROP COLUMN junk;
		ALTER TABLE ev ATTACH PARTITION ev_odd FOR VALUES IN ('o');
		CREATE TABLE ev_a PARTITION OF ev FOR VALUES IN ('a');
		INSERT INTO ev (tenant, stream_id, stream_version, event_type, data) SELECT t, 's', g, 'E', '{}' FROM generate_series(1, 10) g, unnest(ARRAY['a', 'o']) t`)
	require.NoError(t, err)
	src, err := store.Source{Table: "ev", Columns: store.NativeColumns, Ordering: store.OrderXID8}.Resolve(ctx, pool)
	require.NoError(t, err)
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, stepsWith(steps, "CREATE INDEX IF NOT EXISTS"), 2, "ev and ev_empty")
	require.Len(t, stepsWith(steps, "CREATE INDEX CONCURRENTLY"), 2, "ev_a and ev_odd")
	require.Len(t, stepsWith(steps, "ALTER INDEX"), 3)
	applyChecked(t, ctx, pool, steps)
	require.NoError(t, store.VerifyPrepared(ctx, pool, src, false))
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
	again, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Empty(t, again)
}

// TestPrepareFinishesAfterAPartitionCreatedMeanwhile: a partition created
// under a partitioned partition between the table's ON ONLY step and that
// partition's gets no index, so the table's index stays INVALID. The
// verification says so, and the next plan builds and attaches only that
// one; a partition created under the table after its ON ONLY step got the
// index by itself.
func TestPrepareFinishesAfterAPartitionCreatedMeanwhile(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	_, err := pool.Exec(ctx, `CREATE TABLE ev (global_position bigint GENERATED ALWAYS AS IDENTITY, tenant text NOT NULL, sub text NOT NULL,
			transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
			stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
			created_at timestamptz NOT NULL DEFAULT now()) PARTITION BY LIST (tenant);
		CREATE TABLE ev_m PARTITION OF ev FOR VALUES IN ('m') PARTITION BY LIST (sub);
		CREATE TABLE ev_m_1 PARTITION OF ev_m FOR VALUES IN ('1');
		CREATE TABLE ev_a PARTITION OF ev FOR VALUES IN ('a')`)
	require.NoError(t, err)
	src, err := store.Source{Table: "ev", Columns: store.NativeColumns, Ordering: store.OrderXID8}.Resolve(ctx, pool)
	require.NoError(t, err)
	steps, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, steps, 7)
	require.Contains(t, steps[0].SQL, `ON ONLY "public"."ev" `)
	require.Contains(t, steps[1].SQL, `ON ONLY "public"."ev_m" `)
	applyChecked(t, ctx, pool, steps[:1])
	_, err = pool.Exec(ctx, `CREATE TABLE ev_m_2 PARTITION OF ev_m FOR VALUES IN ('2'); CREATE TABLE ev_b PARTITION OF ev FOR VALUES IN ('b')`)
	require.NoError(t, err)
	applyChecked(t, ctx, pool, steps[1:])
	require.ErrorContains(t, store.VerifyPrepared(ctx, pool, src, false), "re-run source prepare --apply")
	require.ErrorIs(t, store.CheckCursorIndex(ctx, pool, src), store.ErrNoCursorIndex)

	rest, err := store.PlanPrepare(ctx, pool, src, false, "")
	require.NoError(t, err)
	require.Len(t, rest, 2)
	require.Equal(t, `CREATE INDEX CONCURRENTLY IF NOT EXISTS "ev_m_2_transaction_id_global_position_idx" ON "public"."ev_m_2" ("transaction_id", "global_position")`, rest[0].SQL)
	require.Equal(t, `ALTER INDEX "public"."ev_m_transaction_id_global_position_idx" ATTACH PARTITION "public"."ev_m_2_transaction_id_global_position_idx"`, rest[1].SQL)
	applyChecked(t, ctx, pool, rest)
	require.NoError(t, store.VerifyPrepared(ctx, pool, src, false))
	require.NoError(t, store.CheckCursorIndex(ctx, pool, src))
}
