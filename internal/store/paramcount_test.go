package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// TestSinkCheckRefusesParameterCountMismatch: whatever the compiler's
// lexer gets wrong (here: a target that runs with
// standard_conforming_strings off, where 'x\' ...' escapes the quote), a
// handler whose compiled SQL PostgreSQL reads with fewer parameters than
// projectord binds fails client-side for every event alike. The start-up
// check must refuse it (ErrBadHandler), not pass it to be charged to each
// event in turn.
func TestSinkCheckRefusesParameterCountMismatch(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	cfg, err := pgxpool.ParseConfig(tb.url)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["standard_conforming_strings"] = "off"
	pool, err := pgxpool.NewWithConfig(tb.ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(tb.ctx, `CREATE TABLE rm (position bigint NOT NULL, note text)`)
	require.NoError(t, err)
	sink, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO rm VALUES (@position, 'x\' @event_type ')`}, "")
	require.NoError(t, err)
	err = store.NewTarget(pool, 5*time.Second).CheckSink(tb.ctx, sink)
	require.Error(t, err, "a handler that binds more arguments than PostgreSQL reads parameters passed the check")
	require.True(t, errors.Is(err, store.ErrBadHandler), "%v", err)
}
