package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// problemFields lists the fields a bad event's error names.
func problemFields(e store.Event) []string {
	if e.Bad == nil {
		return nil
	}
	var out []string
	for _, p := range e.Bad.Problems {
		out = append(out, p.Field)
	}
	return out
}

func TestReaderReturnsUndecodableRowsAsBadEvents(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `ALTER TABLE events ALTER COLUMN stream_id DROP NOT NULL, ALTER COLUMN stream_version DROP NOT NULL,
		ALTER COLUMN event_type DROP NOT NULL, ALTER COLUMN data DROP NOT NULL, ALTER COLUMN created_at DROP NOT NULL,
		ALTER COLUMN data TYPE text, ALTER COLUMN metadata TYPE text`)
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data, metadata, created_at) VALUES
		('good-1', 1, 'A', '{"n":1}', NULL, now()),
		('s1', 1, 'A', '{}', NULL, NULL),
		(NULL, 1, 'A', '{}', NULL, now()),
		('s2', NULL, 'A', '{}', NULL, now()),
		('s3', 1, NULL, '{}', NULL, now()),
		('s4', 1, 'A', '{not json', '{}', now()),
		('s5', 1, 'A', '{}', 'nope', now()),
		('s6', 1, 'A', '', NULL, 'infinity'),
		('good-2', 1, 'A', NULL, '{"m":1}', now())`)
	require.NoError(t, err)
	r := store.NewReader(tb.pool, tb.src, 5*time.Second)
	got, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{}, 100, nil)
	require.NoError(t, err, "no row's values fail the read")
	require.Len(t, got, 9)
	want := [][]string{nil, {"created_at"}, {"stream_id"}, {"stream_version"}, {"event_type"}, {"data"}, {"metadata"}, {"created_at", "data"}, nil}
	for i, e := range got {
		require.Equal(t, want[i], problemFields(e), "row %d (%s)", i, e.StreamID)
	}
	require.JSONEq(t, `{"n":1}`, string(got[0].Data))
	require.Nil(t, got[8].Data, "NULL data is allowed: it binds as NULL")
	require.Equal(t, "{not json", string(got[5].Data), "the raw text is kept")
	require.Equal(t, "nope", string(got[6].Metadata))
	require.True(t, got[4].TypeNull())
	require.EqualError(t, got[7].Bad, `bad source row: column "created_at" (created_at) is infinite; column "data" (data) is not valid JSON`)
	require.EqualError(t, got[1].Bad, `bad source row: column "created_at" (created_at) is NULL`)

	// A filter never matches a NULL type or stream id, as in SQL.
	typed, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{EventTypes: []string{"A"}}, 100, nil)
	require.NoError(t, err)
	require.Len(t, typed, 8)
	prefixed, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{StreamPrefix: "s"}, 100, nil)
	require.NoError(t, err)
	require.Len(t, prefixed, 6)
	for _, e := range got {
		require.Equal(t, slicesContains(typed, e.Cursor), store.Filter{EventTypes: []string{"A"}}.Matches(&e), "in-memory filter agrees for %s", e.Cursor)
		require.Equal(t, slicesContains(prefixed, e.Cursor), store.Filter{StreamPrefix: "s"}.Matches(&e), "in-memory filter agrees for %s", e.Cursor)
	}

	// Committing a batch with a bad row sends nothing and names it.
	sink, err := store.CompileSQLSink(map[string]string{"*": `SELECT @data, @position`}, "")
	require.NoError(t, err)
	target := store.NewTarget(tb.pool, 5*time.Second)
	cp, err := target.Claim(tb.ctx, "p", "node", 0, store.OrderXID8)
	require.NoError(t, err)
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: got[2].Cursor, Events: got[:3]}, sink)
	var applyErr *store.ApplyError
	require.ErrorAs(t, err, &applyErr)
	require.Equal(t, 1, applyErr.Index)
	var bad *store.BadRowError
	require.True(t, errors.As(err, &bad))
	after, _, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.True(t, after.Cursor.IsZero(), "nothing committed")
}

func slicesContains(es []store.Event, c store.Cursor) bool {
	for _, e := range es {
		if e.Cursor == c {
			return true
		}
	}
	return false
}

func TestReaderDecodesOtherColumnTypesInGo(t *testing.T) {
	// Not parallel: see TestReaderReturnsUndecodableRowsAsBadEvents.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE exotic (
		global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
		stream_id text, stream_version text, event_type text, data json, metadata jsonb, created_at text);
		CREATE INDEX ON exotic (transaction_id, global_position);
		INSERT INTO exotic (stream_id, stream_version, event_type, data, created_at) VALUES
			('ok', ' 7 ', 'A', '{"a":1}', '2024-01-02 03:04:05+00'),
			('v', 'seven', 'A', '{}', '2024-01-02 03:04:05+00'),
			('c', '1', 'A', '{}', 'not a time'),
			('n', '1', 'A', '{}', NULL)`)
	require.NoError(t, err)
	src := store.Source{Table: "public.exotic", Columns: store.NativeColumns, Ordering: store.OrderXID8}
	layout, err := src.Inspect(tb.ctx, tb.pool)
	require.NoError(t, err)
	got, err := store.NewReader(tb.pool, src, 5*time.Second).WithLayout(layout).Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.Nil(t, got[0].Bad)
	require.Equal(t, int64(7), got[0].StreamVersion)
	require.True(t, got[0].CreatedAt.Equal(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)), "got %s", got[0].CreatedAt)
	require.EqualError(t, got[1].Bad, `bad source row: column "stream_version" (stream_version) is not a 64-bit integer`)
	require.EqualError(t, got[2].Bad, `bad source row: column "created_at" (created_at) is not a timestamp`)
	require.EqualError(t, got[3].Bad, `bad source row: column "created_at" (created_at) is NULL`)
}

func TestReaderNeverReturnsRowsWithoutACursor(t *testing.T) {
	// Not parallel: see TestReaderReturnsUndecodableRowsAsBadEvents.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE loose (
		global_position bigint, transaction_id xid8 DEFAULT pg_current_xact_id(),
		stream_id text, stream_version bigint, event_type text, data jsonb, metadata jsonb, created_at timestamptz DEFAULT now());
		CREATE INDEX ON loose (transaction_id, global_position)`)
	require.NoError(t, err)
	ins := func(sql string) {
		_, err := tb.pool.Exec(tb.ctx, `INSERT INTO loose (global_position, transaction_id, stream_id, stream_version, event_type, data) `+sql)
		require.NoError(t, err)
	}
	ins(`VALUES (1, pg_current_xact_id(), 's', 1, 'A', '{}')`)
	// A NULL position passes (xid, position) > cursor when the xid is
	// above the cursor's, and sorts first in the head's DESC order.
	ins(`VALUES (NULL, pg_current_xact_id(), 's', 2, 'A', '{}')`)
	ins(`VALUES (3, NULL, 's', 3, 'A', '{}')`)
	ins(`VALUES (4, pg_current_xact_id(), 's', 4, 'A', '{}')`)

	src := store.Source{Table: "public.loose", Columns: store.NativeColumns, Ordering: store.OrderXID8}
	r := store.NewReader(tb.pool, src, 5*time.Second)
	got, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, got, 2, "rows without a cursor have no place in the order: never read")
	require.Equal(t, []int64{1, 4}, []int64{got[0].Position, got[1].Position})
	head, ok, err := r.Head(tb.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, got[1].Cursor, head)
	newest, ok, err := r.Newest(tb.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, got[1].Cursor, newest)
}
