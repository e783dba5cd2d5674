package stores

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/storeddl"
)

// eventcoreStore appends as eventcore-postgres does.
type eventcoreStore struct {
	mu      sync.Mutex
	streams [][]string // per writer
	hot     []string   // every writer appends to these
}

// appendEvents is PostgresEventStore::append_events of eventcore-postgres
// (src/lib.rs at 68c38b46), statement for statement: in one transaction,
// a transaction-scoped advisory lock per stream in stream id order, each
// stream's version checked against the one expected, the expected
// versions handed to the BEFORE INSERT trigger through set_config, then
// one multi-row INSERT with a client-made UUIDv7 event id per event (the
// trigger assigns stream_version). expected maps each stream to the
// version the appender read; a different current version is eventcore's
// VersionConflict, and nothing is inserted. It returns the event ids.
func eventcoreAppend(ctx context.Context, tx pgx.Tx, expected map[string]int64, events []string) ([]string, error) {
	streams := make([]string, 0, len(expected))
	for s := range expected {
		streams = append(streams, s)
	}
	sort.Strings(streams)
	for _, s := range streams {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, s); err != nil {
			return nil, err
		}
	}
	for _, s := range streams {
		var current int64
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(stream_version), 0) FROM eventcore_events WHERE stream_id = $1`, s).Scan(&current); err != nil {
			return nil, err
		}
		if current != expected[s] {
			return nil, errSqlStoreConflict
		}
	}
	versions, _ := json.Marshal(expected)
	if _, err := tx.Exec(ctx, `SELECT set_config('eventcore.expected_versions', $1, true)`, string(versions)); err != nil {
		return nil, err
	}
	q := "INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data, metadata) VALUES "
	var args []any
	var ids []string
	for i, s := range events {
		if i > 0 {
			q += ", "
		}
		n := len(args)
		q += fmt.Sprintf("($%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5)
		id := sqlStoreUUID7()
		ids = append(ids, sqlStoreUUIDString(id))
		typ := "OrderPlaced"
		if i%2 == 1 {
			typ = "ItemAdded"
		}
		args = append(args, id, s, typ, json.RawMessage(fmt.Sprintf(`{"i": %d}`, i)), json.RawMessage(`{}`))
	}
	_, err := tx.Exec(ctx, q, args...)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "P0001" { // the trigger's version_conflict
		return nil, errSqlStoreConflict
	}
	return ids, err
}

// currentVersions reads each stream's version as an eventcore client
// does before deciding what to append (read_stream).
func eventcoreVersions(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, streams ...string) (map[string]int64, error) {
	m := map[string]int64{}
	for _, s := range streams {
		var v int64
		if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(stream_version), 0) FROM eventcore_events WHERE stream_id = $1`, s).Scan(&v); err != nil {
			return nil, err
		}
		m[s] = v
	}
	return m, nil
}

// writer appends one or two events to one stream, or atomically to two
// (one its own, one hot): eventcore's multi-stream append.
func (e *eventcoreStore) writer(ctx context.Context, tx pgx.Tx, w int) ([]int64, error) {
	e.mu.Lock()
	own := e.streams[w]
	var streams []string
	switch {
	case len(own) == 0 || sqlStoreRandInt(4) == 0:
		own = append(own, fmt.Sprintf("order-%d-%d", w, len(own)))
		e.streams[w] = own
		streams = []string{own[len(own)-1]}
	case sqlStoreRandInt(6) == 0:
		streams = []string{own[sqlStoreRandInt(len(own))], e.hot[sqlStoreRandInt(len(e.hot))]}
	default:
		streams = []string{own[sqlStoreRandInt(len(own))]}
	}
	e.mu.Unlock()
	// The versions are read before the append takes its locks, as a
	// command reads its streams first: a hot stream may move meanwhile.
	expected, err := eventcoreVersions(ctx, tx.Conn(), streams...)
	if err != nil {
		return nil, err
	}
	var events []string
	for _, s := range streams {
		for range 1 + sqlStoreRandInt(2) {
			events = append(events, s)
		}
	}
	ids, err := eventcoreAppend(ctx, tx, expected, events)
	if err != nil {
		return nil, err
	}
	// Bookkeeping of the test, not eventcore's: the positions prepare's
	// identity column gave the rows.
	var positions []int64
	rows, err := tx.Query(ctx, `SELECT global_position FROM eventcore_events WHERE event_id = ANY($1::uuid[])`, ids)
	if err != nil {
		return nil, err
	}
	positions, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	return positions, err
}

// TestEventcore runs eventcore-postgres' schema (migrations 0001 to 0007),
// which has no global position: `source prepare` adds one beside the xid8
// column. The events written before it are read first, in the order
// eventcore wrote them; eventcore's triggers still refuse UPDATE and
// DELETE; the events written after, under eight concurrent writers and a
// killed leader, are all applied once.
func TestEventcore(t *testing.T) {
	s := sqlStoreStart(t, "eventcore", sqlStoreProjector{Name: "all"})
	require.Len(t, storeddl.EventCoreMigrations, 7)
	for _, m := range storeddl.EventCoreMigrations { // sqlx: in name order, each in its own transaction
		s.exec(m)
	}

	// Before prepare: eventcore appends from one client, one after
	// another, to streams written again later. In the middle, one large
	// append rolls back and VACUUM (autovacuum, on a live store) records
	// its pages as free, so the appends after it are stored on those
	// pages, before the appends they follow: the table's physical order
	// is not the order eventcore wrote its events.
	e := &eventcoreStore{streams: make([][]string, 8), hot: []string{"inventory-1", "inventory-2"}}
	var before []string
	early := func(i int) {
		streams := []string{fmt.Sprintf("early-%d", i%7), e.hot[i%2]}[:1+i%2]
		tx, err := s.pool.Begin(s.ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(s.ctx) }()
		expected, err := eventcoreVersions(s.ctx, tx, streams...)
		require.NoError(t, err)
		ids, err := eventcoreAppend(s.ctx, tx, expected, append(streams, streams[0]))
		require.NoError(t, err)
		require.NoError(t, tx.Commit(s.ctx))
		before = append(before, ids...)
	}
	for i := range 10 {
		early(i)
	}
	tx, err := s.pool.Begin(s.ctx)
	require.NoError(t, err)
	_, err = eventcoreAppend(s.ctx, tx, map[string]int64{"bulk": 0}, slices.Repeat([]string{"bulk"}, 1000))
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(s.ctx))
	for i := 10; i < 20; i++ {
		early(i)
	}
	s.exec(`VACUUM public.eventcore_events`)
	for i := 20; i < 30; i++ {
		early(i)
	}
	require.True(t, slices.IsSorted(before), "UUIDv7 ids of one client increase")
	require.Positive(t, sqlStoreScalar[int](s, `SELECT count(*) FROM (SELECT event_id < lag(event_id) OVER (ORDER BY ctid) AS back
		FROM public.eventcore_events) x WHERE back`), "the table's physical order already is eventcore's: the case this test is for did not happen")

	s.prepare()

	// prepare added the position as an identity column: the store's
	// writers, which name neither new column, keep working unchanged.
	require.Equal(t, "a", sqlStoreScalar[string](s, `SELECT attidentity::text FROM pg_attribute
		WHERE attrelid = 'public.eventcore_events'::regclass AND attname = 'global_position'`))
	require.Equal(t, len(before), sqlStoreScalar[int](s, `SELECT count(DISTINCT global_position) FROM public.eventcore_events`))
	// eventcore's immutability triggers still hold (ALTER TABLE fires none
	// and drops none).
	for _, q := range []string{
		`UPDATE public.eventcore_events SET event_type = event_type WHERE event_id = $1::uuid`,
		`DELETE FROM public.eventcore_events WHERE event_id = $1::uuid`,
	} {
		_, err := s.pool.Exec(s.ctx, q, before[0])
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, q)
		require.Equal(t, "P0002", pgErr.Code, "%s: %v", q, err)
	}

	s.startReplica("node-1")
	s.startReplica("node-2")
	w := s.startWriters(8, e.writer)
	w.waitEvents(300)
	s.failover("all", false)
	w.waitEvents(300)
	w.finish()

	s.waitCaughtUp("all", `SELECT transaction_id AS xid, global_position AS pos FROM public.eventcore_events`)
	// The events of before prepare share the xid 1, below every writer's:
	// they are the first applied, in their position order, which must be
	// the order eventcore wrote them (its own reader's, event_id order),
	// not the table's physical order (see the VACUUM above): in physical
	// order a stream's later event would be applied before its earlier one.
	rows, err := s.pool.Query(s.ctx, `SELECT event_id FROM public.read_model WHERE projector = 'all' ORDER BY seq LIMIT $1`, len(before))
	require.NoError(t, err)
	first, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, before, first, "the events written before prepare, in the order applied: "+
		"prepare must number existing rows in eventcore's order (event_id), not in the table's physical order")
	s.assertOracle("all", `SELECT event_id::text AS event_id FROM public.eventcore_events`)
	s.assertStreamOrder("all", "false")
	require.Zero(t, sqlStoreScalar[int](s, `SELECT count(*) FROM public.read_model r JOIN public.eventcore_events e ON e.event_id::text = r.event_id
		WHERE r.stream_id <> e.stream_id OR r.stream_version <> e.stream_version OR r.position <> e.global_position OR r.xid <> e.transaction_id`))
}
