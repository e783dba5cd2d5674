package demo_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/demo"
	"github.com/projectord/projectord/internal/store/pgtest"
	"github.com/projectord/projectord/internal/testsupport"
)

// The template stays empty: Setup is what these tests exercise, and it
// takes a few milliseconds.
func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m))
}

type testBundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
}

// setup gives the test an empty database of its own.
func setup(t *testing.T) *testBundle {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return &testBundle{ctx: t.Context(), pool: pool}
}

// setupDemo gives the test a database with the demo tables.
func setupDemo(t *testing.T) *testBundle {
	t.Helper()
	tb := setup(t)
	_, err := demo.Setup(tb.ctx, tb.pool, demo.SetupOptions{})
	require.NoError(t, err)
	return tb
}

func (tb *testBundle) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, tb.pool.QueryRow(tb.ctx, sql, args...).Scan(&n))
	return n
}

var waitFor = testsupport.WaitFor

// generate appends limit events as fast as writers can and waits for them.
func (tb *testBundle) generate(t *testing.T, limit int64, writers int) *demo.Generator {
	t.Helper()
	g, err := demo.NewGenerator(tb.pool, demo.Options{Writers: writers, Limit: limit})
	require.NoError(t, err)
	require.NoError(t, g.Start(tb.ctx))
	t.Cleanup(g.Stop)
	select {
	case <-g.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("generator did not append %d events within 20s: %+v", limit, g.Stats())
	}
	return g
}
