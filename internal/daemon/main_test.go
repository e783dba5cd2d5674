package daemon

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

func TestMain(m *testing.M) {
	os.Exit(pgtest.Main(m, pgtest.WithTemplate(prepareTemplate)))
}

// prepareTemplate migrates the template and creates a native events table.
func prepareTemplate(ctx context.Context, url string) error {
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := store.Migrate(ctx, pool, "test"); err != nil {
		return err
	}
	for _, q := range store.NativeTableSQL("public.events") {
		if _, err := pool.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}
