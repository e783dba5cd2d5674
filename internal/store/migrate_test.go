package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

func TestMigrateConcurrentlyAppliesOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	results := make([]store.MigrateResult, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pool, err := pgxpool.New(ctx, url)
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			results[i], errs[i] = store.Migrate(ctx, pool, "test")
		}()
	}
	wg.Wait()
	winners, applied := 0, 0
	for i := range n {
		require.NoError(t, errs[i])
		if len(results[i].Applied) > 0 {
			winners, applied = winners+1, len(results[i].Applied)
		}
	}
	require.Equal(t, 1, winners, "exactly one migrator applies the migrations")

	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	var rows, version int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), max(version) FROM projectord.schema_migrations`).Scan(&rows, &version))
	require.Equal(t, applied, rows)
	require.Equal(t, store.SchemaVersion(), version)
	require.NoError(t, store.CheckSchema(ctx, pool))

	again, err := store.Migrate(ctx, pool, "test")
	require.NoError(t, err)
	require.Empty(t, again.Applied, "migrate is idempotent")
}

func TestSchemaNewerThanBinaryIsRefused(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO projectord.schema_migrations (version, name, applied_by) VALUES (9999, 'future', 'v99')`)
	require.NoError(t, err)
	_, err = store.Migrate(tb.ctx, tb.pool, "test")
	require.ErrorIs(t, err, store.ErrSchemaTooNew)
	require.ErrorIs(t, store.CheckSchema(tb.ctx, tb.pool), store.ErrSchemaTooNew)
}

func TestCheckSchemaOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), url)
	require.NoError(t, err)
	defer pool.Close()
	require.ErrorContains(t, store.CheckSchema(t.Context(), pool), "projectord migrate")
}
