package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

func TestReaderReadsInCursorOrderWithFilters(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	tb.insert(t, "order-1", "OrderPlaced", `{"n":1}`)
	tb.insert(t, "order-1", "ItemAdded", `{"n":2}`)
	tb.insert(t, "cart-1", "OrderPlaced", `{"n":3}`)
	tb.insert(t, "order-2", "OrderPlaced", `{"n":4}`)
	r := store.NewReader(tb.pool, tb.src, 5*time.Second)

	all, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, all, 4)
	for i := 1; i < len(all); i++ {
		require.True(t, all[i-1].Cursor.Less(all[i].Cursor))
	}
	require.JSONEq(t, `{"n":1}`, string(all[0].Data))
	require.Equal(t, int64(1), all[0].StreamVersion)
	require.False(t, all[0].CreatedAt.IsZero())

	page, err := r.Read(tb.ctx, all[1].Cursor, store.Filter{}, 1, nil)
	require.NoError(t, err)
	require.Equal(t, []store.Cursor{all[2].Cursor}, cursors(page))

	f := store.Filter{EventTypes: []string{"OrderPlaced"}, StreamPrefix: "order-"}
	got, err := r.Read(tb.ctx, store.Cursor{}, f, 10, nil)
	require.NoError(t, err)
	require.Equal(t, []store.Cursor{all[0].Cursor, all[3].Cursor}, cursors(got))

	head, ok, err := r.Head(tb.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, all[3].Cursor, head)
}

func TestReaderStopsAtHorizonOfOpenTransaction(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	tb.insert(t, "s", "A", `{}`)
	// An open writer with an earlier xid holds the horizon...
	slow, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer slow.Rollback(tb.ctx)
	_, err = slow.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('slow', 1, 'A', '{}')`)
	require.NoError(t, err)
	// ...so a later, committed transaction must not be read past it.
	tb.insert(t, "fast", "A", `{}`)

	r := store.NewReader(tb.pool, tb.src, 5*time.Second)
	got, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, got, 1, "only the event below the open transaction's xid is readable")
	head, _, err := r.Head(tb.ctx)
	require.NoError(t, err)
	require.Equal(t, got[0].Cursor, head)

	require.NoError(t, slow.Commit(tb.ctx))
	got, err = r.Read(tb.ctx, got[0].Cursor, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "slow", got[0].StreamID, "the earlier transaction's event comes first once committed")
}

func TestSourceCheckRefusesTableWithoutXID8(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE legacy (global_position bigint, stream_id text, stream_version bigint,
		event_type text, data jsonb, metadata jsonb, created_at timestamptz)`)
	require.NoError(t, err)
	src := store.Source{Table: "public.legacy", Columns: store.NativeColumns, Ordering: store.OrderXID8}
	err = src.Check(tb.ctx, tb.pool)
	require.ErrorIs(t, err, store.ErrNoXID8)
	require.ErrorContains(t, err, "source prepare")

	src.Ordering = store.OrderPosition
	require.NoError(t, src.Check(tb.ctx, tb.pool), "position ordering is an explicit opt-in")

	for _, step := range store.PrepareSQL(store.Source{Table: "public.legacy", Columns: store.NativeColumns}, true, "projectord_events") {
		_, err := tb.pool.Exec(tb.ctx, step.SQL)
		require.NoError(t, err, step.SQL)
	}
	src.Ordering = store.OrderXID8
	require.NoError(t, src.Check(tb.ctx, tb.pool))
	require.NoError(t, tb.src.Check(tb.ctx, tb.pool))
	require.ErrorContains(t, store.Source{Table: "public.nope", Columns: store.NativeColumns}.Check(tb.ctx, tb.pool), "does not exist")
}

func cursors(es []store.Event) []store.Cursor {
	out := make([]store.Cursor, len(es))
	for i, e := range es {
		out[i] = e.Cursor
	}
	return out
}
