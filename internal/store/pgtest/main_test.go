package pgtest_test

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/projectord/projectord/internal/store/pgtest"
)

// helperEnv makes the test binary act as a helper process for the tests in
// signal_test.go; its value says which.
const helperEnv = "PGTEST_TEST_HELPER"

func TestMain(m *testing.M) {
	setup := setupTemplate
	if os.Getenv(helperEnv) == "fail-setup" {
		setup = func(context.Context, string) error { return errors.New("setup exploded") }
	}
	os.Exit(pgtest.Main(m, pgtest.WithTemplate(setup)))
}

// setupTemplate stands in for the migrations.
func setupTemplate(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE from_template (v text); INSERT INTO from_template VALUES ('seeded')`)
	return err
}
