package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// The shared window filters in memory (Filter.Matches) what a projector's
// own read filters in SQL: the two must select the same events, or a
// projector moving between them would skip or repeat some. Checked on the
// columns where they could differ: a type column of char(n) (compared
// without its padding), a stream column under a nondeterministic collation
// (where "=" and prefix searches are not bytewise), prefixes holding LIKE
// wildcards and non-ASCII text, and NULLs.
func TestFilterMatchesAgreesWithTheReadQuery(t *testing.T) {
	// Not parallel: see TestReaderReturnsUndecodableRowsAsBadEvents.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE COLLATION IF NOT EXISTS ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`)
	require.NoError(t, err, "ICU collations are part of PostgreSQL's Debian build")
	_, err = tb.pool.Exec(tb.ctx, `CREATE TABLE awkward (
		global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
		stream_id text COLLATE ci, stream_version bigint NOT NULL DEFAULT 1, event_type char(12) COLLATE ci,
		data jsonb NOT NULL DEFAULT '{}', metadata jsonb, created_at timestamptz NOT NULL DEFAULT now());
		CREATE INDEX ON awkward (transaction_id, global_position)`)
	require.NoError(t, err)
	rows := []struct{ stream, typ any }{
		{"order-1", "Placed"}, {"ORDER-2", "placed"}, {"Order-3", "PLACED"}, {"order_4", "Placed"},
		{"order%5", "Shipped"}, {"ordér-6", "Shipped"}, {"orde", "Placed "}, {nil, "Placed"},
		{"order-7", nil}, {"cart-1", "Placed"}, {"", "Placed"}, {"order-8", ""},
	}
	for _, r := range rows {
		_, err := tb.pool.Exec(tb.ctx, `INSERT INTO awkward (stream_id, event_type) VALUES ($1, $2)`, r.stream, r.typ)
		require.NoError(t, err)
	}
	src := store.Source{Table: "public.awkward", Columns: store.NativeColumns, Ordering: store.OrderXID8}
	layout, err := src.Inspect(tb.ctx, tb.pool)
	require.NoError(t, err)
	reader := store.NewReader(tb.pool, src, 5*time.Second).WithLayout(layout)
	all, err := reader.Read(tb.ctx, store.Cursor{}, store.Filter{}, 100, nil)
	require.NoError(t, err)
	require.Len(t, all, len(rows))

	var filters []store.Filter
	for _, types := range [][]string{nil, {"Placed"}, {"placed"}, {"Placed", "Shipped"}, {""}, {"Placed "}} {
		for _, prefix := range []string{"", "order", "ORDER", "order-", "order_", "order%", "ordé", "o", "cart-1"} {
			filters = append(filters, store.Filter{EventTypes: types, StreamPrefix: prefix},
				store.Filter{EventTypes: types, StreamPrefix: prefix, TypeNull: true},
				store.Filter{EventTypes: types, StreamPrefix: prefix, PositionFloor: all[3].Position})
		}
	}
	for _, f := range filters {
		t.Run(fmt.Sprintf("%q/%q/null=%t/floor=%d", f.EventTypes, f.StreamPrefix, f.TypeNull, f.PositionFloor), func(t *testing.T) {
			got, err := reader.Read(tb.ctx, store.Cursor{}, f, 100, nil)
			require.NoError(t, err)
			want := []store.Cursor{}
			for i := range all {
				if f.Matches(&all[i]) {
					want = append(want, all[i].Cursor)
				}
			}
			require.Equal(t, want, cursors(got))
		})
	}
}
