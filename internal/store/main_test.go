package store_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

// The template is left unmigrated so migration tests start from nothing;
// other tests migrate in setup (a few milliseconds).
func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m))
}

type testBundle struct {
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
	src  store.Source
}

// setup gives the test a migrated database with a native events table.
func setup(t *testing.T) *testBundle {
	t.Helper()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := store.Migrate(ctx, pool, "test"); err != nil {
		t.Fatal(err)
	}
	for _, q := range store.NativeTableSQL("public.events") {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	return &testBundle{ctx: ctx, url: url, pool: pool,
		src: store.Source{Table: "public.events", Columns: store.NativeColumns, Ordering: store.OrderXID8}}
}

func (tb *testBundle) insert(t *testing.T, stream, typ, data string) {
	t.Helper()
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ($1, coalesce((SELECT max(stream_version) FROM events WHERE stream_id = $1), 0) + 1, $2, $3)`, stream, typ, data)
	if err != nil {
		t.Fatal(err)
	}
}
