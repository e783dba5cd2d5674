package stores

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// martenStream is a stream writers append to: a key (a uuid, or a string
// under AsString identity) within a tenant.
type martenStream struct {
	key    any
	tenant string
}

// martenStore is one Marten configuration under test.
type martenStore struct {
	s       *sqlStore
	guid    bool     // StreamIdentity.AsGuid, else AsString
	tenants []string // the tenants appends are made for

	mu      sync.Mutex
	streams [][]martenStream // per writer
	hot     []martenStream   // shared by every writer: conflicts happen here
}

// newKey is a new stream's key in this identity.
func (m *martenStore) newKey(name string) any {
	if m.guid {
		return sqlStoreUUID4()
	}
	return name
}

// appendEvents is Marten's append in its default mode
// (QuickWithServerTimestamps): one call of mt_quick_append_events with
// the events' arrays, as QuickAppendEventsWithServerTimestampsOperation
// binds them (src/Marten/EventStorage/QuickWithServerTimestamps/ at
// c921fa5d), expected_version NULL as for an append without optimistic
// concurrency. It returns the events' seq_ids.
func (m *martenStore) appendEvents(ctx context.Context, tx pgx.Tx, st martenStream, n int) ([]int64, error) {
	ids := make([][16]byte, n)
	types := make([]string, n)
	dotnet := make([]string, n)
	bodies := make([]json.RawMessage, n)
	bdatas := make([][]byte, n) // NULL: the events are JSON-serialised
	stamps := make([]time.Time, n)
	for i := range n {
		ids[i] = sqlStoreUUID4()
		types[i], dotnet[i] = "order_placed", "Shop.OrderPlaced, Shop"
		if i%2 == 1 {
			types[i], dotnet[i] = "item_added", "Shop.ItemAdded, Shop"
		}
		bodies[i] = json.RawMessage(fmt.Sprintf(`{"n": %d}`, i))
		stamps[i] = time.Now()
	}
	var res []int64
	err := tx.QueryRow(ctx, `select public.mt_quick_append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		st.key, "Order", st.tenant, ids, types, dotnet, bodies, bdatas, stamps, nil).Scan(&res)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		// Two appends to one stream computed the same versions (or both
		// created it): Marten reports a concurrency error and the caller
		// retries.
		return nil, errSqlStoreConflict
	}
	if err != nil {
		return nil, err
	}
	return res[1:], nil // the first element is the stream's new version
}

// writer makes one append of writer w: to a new stream of its own, to one
// of its own, or to a hot stream every writer appends to.
func (m *martenStore) writer(ctx context.Context, tx pgx.Tx, w int) ([]int64, error) {
	m.mu.Lock()
	var st martenStream
	switch own := m.streams[w]; {
	case len(own) == 0 || sqlStoreRandInt(4) == 0:
		// Under conjoined tenancy one key names a stream in every tenant:
		// the keys of writer w repeat across tenants on purpose.
		st = martenStream{key: m.newKey(fmt.Sprintf("order-%d-%d", w, len(own)/len(m.tenants))), tenant: m.tenants[len(own)%len(m.tenants)]}
		m.streams[w] = append(own, st)
	case sqlStoreRandInt(8) == 0:
		st = m.hot[sqlStoreRandInt(len(m.hot))]
	default:
		st = own[sqlStoreRandInt(len(own))]
	}
	m.mu.Unlock()
	return m.appendEvents(ctx, tx, st, 1+sqlStoreRandInt(3))
}

// martenRun is the acceptance run for one Marten schema: Marten's tables,
// events and archived streams before prepare, the check-db refusal and
// prepare, two replicas, eight writers, a leader killed (or, graceful,
// stopped) mid-run, and the oracle.
func martenRun(t *testing.T, ddl string, guid bool, tenants []string, graceful bool) *martenStore {
	s := sqlStoreStart(t, "marten", sqlStoreProjector{Name: "all"})
	s.exec(sqlStoreTestdata(t, ddl))
	m := &martenStore{s: s, guid: guid, tenants: tenants, streams: make([][]martenStream, 8)}

	// Before prepare: events of streams that stay live and of streams
	// Marten then archives (mt_archive_stream flips is_archived on the
	// stream's events). The archived ones must never reach the read model.
	// (A stream archived after its events were applied keeps them there,
	// as with Marten's own daemon: the archive is an UPDATE of read rows.)
	var archived []martenStream
	for i := range 6 {
		st := martenStream{key: m.newKey(fmt.Sprintf("early-%d", i)), tenant: tenants[i%len(tenants)]}
		tx, err := s.pool.Begin(s.ctx)
		require.NoError(t, err)
		_, err = m.appendEvents(s.ctx, tx, st, 3)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(s.ctx))
		if i%2 == 0 {
			archived = append(archived, st)
		}
	}
	for _, st := range archived {
		if guid {
			s.exec(`SELECT public.mt_archive_stream($1)`, st.key)
		} else {
			s.exec(`SELECT public.mt_archive_stream($1, $2)`, st.key, st.tenant)
		}
	}
	for i := range 3 {
		st := martenStream{key: m.newKey(fmt.Sprintf("hot-%d", i)), tenant: tenants[i%len(tenants)]}
		m.hot = append(m.hot, st)
	}

	s.prepare()
	martenWeaselExtras(t, s)

	s.startReplica("node-1")
	s.startReplica("node-2")
	w := s.startWriters(8, m.writer)
	w.waitEvents(300)
	s.failover("all", graceful)
	w.waitEvents(300)
	w.finish()

	s.waitCaughtUp("all", `SELECT transaction_id AS xid, seq_id AS pos FROM public.mt_events WHERE is_archived = FALSE`)
	s.assertOracle("all", `SELECT id::text AS event_id FROM public.mt_events WHERE is_archived = FALSE`)
	s.assertStreamOrder("all", "false")
	require.Equal(t, 9, sqlStoreScalar[int](s, `SELECT count(*) FROM public.mt_events WHERE is_archived`),
		"the archived streams' events are in the table, and none was applied (the oracle)")

	// The stream key arrives as @stream_id, the tenant as
	// @metadata->>'tenant_id', each exactly as mt_events holds them.
	require.Zero(t, sqlStoreScalar[int](s, `SELECT count(*) FROM public.read_model r JOIN public.mt_events e ON e.id::text = r.event_id
		WHERE r.stream_id IS DISTINCT FROM e.stream_id::text OR r.tenant IS DISTINCT FROM e.tenant_id OR r.position <> e.seq_id
		   OR r.stream_version <> e.version OR r.event_type <> e.type`), "read model rows that differ from their mt_events row")
	require.Equal(t, len(tenants), sqlStoreScalar[int](s, `SELECT count(DISTINCT tenant) FROM public.read_model`))
	return m
}

// martenModel is the columns and non-primary indexes of mt_events that
// Marten's EventsTable declares for the schemas under test: what Weasel
// compares the table with.
var martenModel = struct{ columns, indexes []string }{
	columns: []string{"seq_id", "id", "stream_id", "version", "data", "bdata", "type", "timestamp", "tenant_id", "mt_dotnet_type", "is_archived"},
	indexes: []string{"pk_mt_events_stream_and_version"},
}

// martenWeaselExtras checks what Marten's schema migration finds on
// mt_events after `source prepare`: the objects prepare added, and no
// others. Weasel reads the table as Table.ConfigureQueryCommand does
// (every column of information_schema.columns, every index of pg_index)
// and diffs it with Marten's model in TableDelta (JasperFx/weasel,
// src/Weasel.Postgresql/Tables/TableDelta.cs and ItemDelta.cs at
// 062b2506abd1f9bb54800b8fac92aed1b04490a0, Weasel.Postgresql 9.25.1 as
// Marten c921fa5d pins it; unchanged at 9.26.0, efb8a60e): a column or
// index the model lacks is an "extra", the delta is an Update, and
// WriteUpdate emits `drop index if exists ...` for each extra index and
// `alter table public.mt_events drop column ...` for each extra column.
//
//   - AutoCreate.CreateOrUpdate (Marten's default, StoreOptions.cs) and
//     All apply that delta on the event store's first use in each process
//     (DatabaseBase.ensureStorageExistsAsync -> executeMigration) and on
//     ApplyAllConfiguredChangesToDatabaseAsync / db-apply: Marten DROPS
//     transaction_id and the cursor index.
//   - CreateOnly refuses the Update (SchemaMigration.AssertPatchingIsValid
//     throws SchemaMigrationException): the event store fails on first use.
//   - None applies nothing; AssertDatabaseMatchesConfigurationAsync
//     (db-assert) still throws, listing the drops, and db-patch writes them
//     into the migration file.
//
// opts.Events.IgnoreIndex(name) (EventGraph.cs) exempts the index;
// nothing exempts a column. Re-running prepare after such a drop gives
// every row, including those written while the column was gone, the xid
// 1 again, below every projector's checkpoint: those rows are never read.
func martenWeaselExtras(t *testing.T, s *sqlStore) {
	t.Helper()
	rows, err := s.pool.Query(s.ctx, `SELECT column_name::text FROM information_schema.columns
		WHERE table_schema = 'public' AND table_name = 'mt_events' AND column_name <> ALL($1) ORDER BY 1`, martenModel.columns)
	require.NoError(t, err)
	columns, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	rows, err = s.pool.Query(s.ctx, `SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
		WHERE x.indrelid = 'public.mt_events'::regclass AND NOT x.indisprimary AND i.relname <> ALL($1) ORDER BY 1`, martenModel.indexes)
	require.NoError(t, err)
	indexes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"transaction_id"}, columns, "columns of mt_events Marten's model lacks")
	require.Len(t, indexes, 1, "indexes of mt_events Marten's model lacks: %v", indexes)
	t.Logf("Marten's schema migration sees extras on mt_events: column %v, index %v (opts.Events.IgnoreIndex(%q) exempts the index, nothing the column)",
		columns, indexes, indexes[0])
}

// TestMartenGuidStreams runs Marten's default schema (Guid stream
// identity, single tenancy): every event Marten's own daemon reads (not
// archived) is applied once, through a killed leader.
func TestMartenGuidStreams(t *testing.T) {
	s := martenRun(t, "marten_guid_single.sql", true, []string{"*DEFAULT*"}, false).s
	require.Equal(t, "uuid", sqlStoreScalar[string](s, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute
		WHERE attrelid = 'public.mt_events'::regclass AND attname = 'stream_id'`))
}

// TestMartenStringStreamsConjoinedTenants runs Marten's schema for string
// stream keys (AsString) under conjoined tenancy, where one key names a
// different stream in each tenant: @stream_id carries the key alone, so a
// projector tells such streams apart by @metadata->>'tenant_id'. Its leader
// is stopped (SIGTERM, a graceful handover) rather than killed.
func TestMartenStringStreamsConjoinedTenants(t *testing.T) {
	s := martenRun(t, "marten_string_conjoined.sql", false, []string{"*DEFAULT*", "acme", "globex"}, true).s
	shared := sqlStoreScalar[int](s, `SELECT count(*) FROM (SELECT stream_id FROM public.read_model
		GROUP BY stream_id HAVING count(DISTINCT tenant) > 1) x`)
	require.Positive(t, shared, "no stream key was used in two tenants: the case this test is for did not happen")
	t.Logf("%d stream keys name streams in more than one tenant; their events arrive with the same @stream_id and their own tenant", shared)
}
