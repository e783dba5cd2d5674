package stores

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/storeddl"
)

// eventuousExpectedAny is ExpectedStreamVersion.Any, -1 NoStream.
const (
	eventuousExpectedAny      = -2
	eventuousExpectedNoStream = -1
)

// eventuousAppend is PostgresStore.AppendEvents of Eventuous.Postgresql
// (src/Postgres/src/Eventuous.Postgresql/PostgresStore.cs and
// src/Relational/src/Eventuous.Sql.Base/SqlEventStoreBase.cs at b2c610f2):
// in a transaction, `select * from eventuous.append_events(@_stream_name,
// @_expected_version, @_created, @_messages)` with the messages as an
// array of eventuous.stream_message (Npgsql maps NewPersistedEvent to it;
// here ROW() builds the same values) and _created DateTime.UtcNow. It
// returns the global positions the messages got.
func eventuousAppend(ctx context.Context, tx pgx.Tx, stream string, expected, n int) ([]int64, error) {
	ids := make([][16]byte, n)
	types := make([]string, n)
	data := make([]json.RawMessage, n)
	meta := make([]json.RawMessage, n)
	for i := range n {
		ids[i] = sqlStoreUUID4()
		types[i] = "V1.OrderPlaced"
		if i%2 == 1 {
			types[i] = "V1.ItemAdded"
		}
		data[i] = json.RawMessage(fmt.Sprintf(`{"i": %d}`, i))
		meta[i] = json.RawMessage(`{"$correlationId": "c"}`)
	}
	var version int32
	var position int64
	err := tx.QueryRow(ctx, `select * from eventuous.append_events($1, $2, $3,
		ARRAY(SELECT ROW(m.id, m.type, m.data, m.meta)::eventuous.stream_message
		      FROM unnest($4::uuid[], $5::varchar[], $6::jsonb[], $7::jsonb[]) WITH ORDINALITY AS m(id, type, data, meta, n) ORDER BY m.n))`,
		stream, expected, time.Now().UTC(), ids, types, data, meta).Scan(&version, &position)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Message, "WrongExpectedVersion") || pgErr.Code == "23505") {
		// AppendToStreamException, or two appends creating one stream: the
		// client retries.
		return nil, errSqlStoreConflict
	}
	if err != nil {
		return nil, err
	}
	// Bookkeeping of the test, not Eventuous': append_events reports only
	// the stream's last position, and a message ON CONFLICT DO NOTHING
	// dropped has none.
	rows, err := tx.Query(ctx, `SELECT global_position FROM eventuous.messages WHERE message_id = ANY($1)`, ids)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// eventuousStore chooses what each writer appends.
type eventuousStore struct {
	mu      sync.Mutex
	streams [][]string // per writer
	hot     []string
}

// eventuousPrefix is the stream_prefix of projector "orders". Its
// underscore is a LIKE wildcard: names such as "orderX..." must not match.
const eventuousPrefix = "order_"

func (e *eventuousStore) writer(ctx context.Context, tx pgx.Tx, w int) ([]int64, error) {
	e.mu.Lock()
	own := e.streams[w]
	var stream string
	expected := eventuousExpectedAny
	switch {
	case len(own) == 0 || sqlStoreRandInt(4) == 0:
		stream = fmt.Sprintf("%s%d-%d", []string{"order_", "orderX", "cart_"}[len(own)%3], w, len(own))
		e.streams[w] = append(own, stream)
		expected = eventuousExpectedNoStream
	case sqlStoreRandInt(8) == 0:
		stream = e.hot[sqlStoreRandInt(len(e.hot))] // ExpectedStreamVersion.Any
	default:
		stream = own[sqlStoreRandInt(len(own))]
		// The stream's version as the aggregate was loaded: only this
		// writer appends to it.
		var v int32
		if err := tx.QueryRow(ctx, `SELECT version FROM eventuous.streams WHERE stream_name = $1`, stream).Scan(&v); err != nil {
			if errors.Is(err, pgx.ErrNoRows) { // its first append rolled back
				v = eventuousExpectedNoStream
			} else {
				e.mu.Unlock()
				return nil, err
			}
		}
		expected = int(v)
	}
	e.mu.Unlock()
	return eventuousAppend(ctx, tx, stream, expected, 1+sqlStoreRandInt(3))
}

// TestEventuous runs Eventuous' PostgreSQL schema (its scripts 1 to 8 in
// schema eventuous), whose messages name their stream by an integer id:
// the preset reads the stream's name from eventuous.streams, so it
// arrives as @stream_id and stream_prefix filters on it. Two projectors
// (every stream; streams named "order_...") under eight writers and a
// killed leader each apply exactly their events once.
func TestEventuous(t *testing.T) {
	s := sqlStoreStart(t, "eventuous",
		sqlStoreProjector{Name: "all"}, sqlStoreProjector{Name: "orders", StreamPrefix: eventuousPrefix})
	scripts := storeddl.Eventuous("eventuous")
	require.Len(t, scripts, 8)
	// Schema.CreateSchema: every script, in name order, in one transaction.
	createSchema := func() {
		tx, err := s.pool.Begin(s.ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(s.ctx) }()
		for i, sql := range scripts {
			_, err := tx.Exec(s.ctx, sql)
			require.NoError(t, err, "script %d", i+1)
		}
		require.NoError(t, tx.Commit(s.ctx))
	}
	createSchema()

	e := &eventuousStore{streams: make([][]string, 8), hot: []string{"order_hot-1", "orderXhot-2", "cart_hot-3"}}
	// Before prepare: a few streams of each kind.
	for i := range 9 {
		tx, err := s.pool.Begin(s.ctx)
		require.NoError(t, err)
		_, err = eventuousAppend(s.ctx, tx, fmt.Sprintf("%searly-%d", []string{"order_", "orderX", "cart_"}[i%3], i), eventuousExpectedNoStream, 2)
		require.NoError(t, err)
		require.NoError(t, tx.Commit(s.ctx))
	}

	s.prepare()
	// With InitializeDatabase, every start of an Eventuous application runs
	// the scripts again: they create only what is missing and replace the
	// functions, so what prepare added stays.
	createSchema()
	out, code := s.projectord("config", "validate", "--check-db")
	require.Equal(t, 0, code, "config validate --check-db after Eventuous' scripts ran again:\n%s", out)

	s.startReplica("node-1")
	s.startReplica("node-2")
	w := s.startWriters(8, e.writer)
	w.waitEvents(300)
	s.failover("all", false)
	w.waitEvents(300)
	w.finish()

	const all = `SELECT m.message_id::text AS event_id, m.transaction_id AS xid, m.global_position AS pos, s.stream_name
		FROM eventuous.messages m JOIN eventuous.streams s ON s.stream_id = m.stream_id`
	orders := fmt.Sprintf(`SELECT * FROM (%s) a WHERE left(a.stream_name, %d) = '%s'`, all, len(eventuousPrefix), eventuousPrefix)
	s.waitCaughtUp("all", all)
	s.waitCaughtUp("orders", orders)
	s.assertOracle("all", all)
	n := s.assertOracle("orders", orders)
	// Only the hot streams, which several writers append to at once, may
	// be applied out of stream order (see assertStreamOrder).
	hot := fmt.Sprintf("stream_id IN ('%s')", strings.Join(e.hot, "', '"))
	for _, p := range []string{"all", "orders"} {
		if n := s.assertStreamOrder(p, hot); n > 0 {
			t.Logf("%s: %d events of hot streams applied before an earlier event of their stream", p, n)
		}
	}
	require.Less(t, n, sqlStoreScalar[int](s, `SELECT count(*) FROM eventuous.messages`))
	require.Positive(t, sqlStoreScalar[int](s, `SELECT count(*) FROM eventuous.streams WHERE stream_name LIKE $1 AND NOT starts_with(stream_name, $1)`, eventuousPrefix+"%"),
		"no stream name that LIKE 'order_%' matches and the prefix does not: the case the prefix's underscore is for did not happen")

	// @stream_id is the stream's name, never its integer id; the other
	// fields are the message's own.
	require.Zero(t, sqlStoreScalar[int](s, `SELECT count(*) FROM public.read_model r
		JOIN eventuous.messages m ON m.message_id::text = r.event_id JOIN eventuous.streams s ON s.stream_id = m.stream_id
		WHERE r.stream_id <> s.stream_name OR r.stream_version <> m.stream_position OR r.position <> m.global_position
		   OR r.event_type <> m.message_type OR r.xid <> m.transaction_id`), "read model rows that differ from their message")
}
