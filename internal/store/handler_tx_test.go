package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// A handler that ends the batch's transaction (a CALLed procedure or a DO
// block that COMMITs or ROLLs BACK) must commit nothing, fenced or not, and
// must not be charged to the event it ran for.
func TestCommitHandlersCannotEndTheBatchTransaction(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `
		CREATE TABLE rm (position bigint NOT NULL);
		CREATE PROCEDURE rm_commit(p bigint) LANGUAGE plpgsql AS $$ BEGIN INSERT INTO rm VALUES (p); COMMIT; END $$;
		CREATE PROCEDURE rm_rollback(p bigint) LANGUAGE plpgsql AS $$ BEGIN INSERT INTO rm VALUES (p); ROLLBACK; END $$;`)
	require.NoError(t, err)
	for range 3 {
		tb.insert(t, "s", "A", `{}`)
	}
	events, err := store.NewReader(tb.pool, tb.src, time.Second).Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, events, 3)

	compiled := func(sql string) *store.SQLSink {
		s, err := store.CompileSQLSink(map[string]string{"A": sql}, "")
		require.NoError(t, err)
		return s
	}
	sinks := map[string]*store.SQLSink{
		"CALL committing":   compiled(`CALL rm_commit(@position)`),
		"CALL rolling back": compiled(`CALL rm_rollback(@position)`),
		// These two the compiler refuses; they stand for anything it misses.
		"DO committing":   store.UncheckedSQLSink(map[string]string{"A": `DO $$ BEGIN INSERT INTO rm VALUES (-1); COMMIT; END $$`}),
		"DO rolling back": store.UncheckedSQLSink(map[string]string{"A": `DO $$ BEGIN INSERT INTO rm VALUES (-1); ROLLBACK; END $$`}),
	}
	target := store.NewTarget(tb.pool, 10*time.Second)
	for name, sink := range sinks {
		for _, fenced := range []bool{true, false} {
			cp, err := target.Claim(tb.ctx, "p", "node-a", 0, store.OrderXID8)
			require.NoError(t, err)
			epoch := cp.Epoch
			if fenced {
				// A rival claims while the batch is in flight.
				_, err := target.Claim(tb.ctx, "p", "node-b", 0, store.OrderXID8)
				require.NoError(t, err)
			}
			err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: epoch, To: events[2].Cursor, Events: events}, sink)
			require.Error(t, err, "%s (fenced %v)", name, fenced)
			var rows int
			require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm`).Scan(&rows))
			require.Zero(t, rows, "%s (fenced %v): rows of a failed batch persisted", name, fenced)
			c, _, lerr := target.Load(tb.ctx, "p")
			require.NoError(t, lerr)
			require.True(t, c.Cursor.IsZero(), "%s (fenced %v): the checkpoint moved", name, fenced)

			var applyErr *store.ApplyError
			require.False(t, errors.As(err, &applyErr), "%s (fenced %v): charged to an event: %v", name, fenced, err)
			require.ErrorIs(t, err, store.ErrBadHandler, "%s (fenced %v)", name, fenced)
			require.ErrorContains(t, err, "handler A:")
			require.ErrorContains(t, err, "2D000")
		}
	}
	// The failures left no transaction open on the pool's connections.
	cp, err := target.Claim(tb.ctx, "p", "node-a", 0, store.OrderXID8)
	require.NoError(t, err)
	ok := compiled(`INSERT INTO rm VALUES (@position)`)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[2].Cursor, Events: events}, ok))
	var rows int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm`).Scan(&rows))
	require.Equal(t, 3, rows)
}

// The check plans handlers, so errors PostgreSQL raises only when planning
// (constant folding) surface as well as unknown columns and functions; it
// names each refused handler and leaves good ones alone.
func TestSinkCheckPreparesAndPlansEveryHandler(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE rm (id text, n int);
		CREATE PROCEDURE rm_proc(p bigint) LANGUAGE sql AS $$ INSERT INTO rm VALUES (p::text, 0) $$`)
	require.NoError(t, err)
	sink, err := store.CompileSQLSink(map[string]string{
		"Good":     `INSERT INTO rm VALUES (@data->>'id', (@data->>'n')::int) ON CONFLICT DO NOTHING`,
		"Call":     `CALL rm_proc(@position)`,
		"Cast":     `INSERT INTO rm VALUES (@stream_id, 'abc'::text::int)`,
		"Column":   `UPDATE rm SET nope = 1 WHERE id = @stream_id`,
		"Function": `INSERT INTO rm VALUES (no_such_function(@data), 1)`,
		"Proc":     `CALL no_such_procedure(@position)`,
	}, `DELETE FROM rm WHERE n = 'x'::text::int`)
	require.NoError(t, err)

	err = store.NewTarget(tb.pool, 10*time.Second).CheckSink(tb.ctx, sink)
	require.ErrorIs(t, err, store.ErrBadHandler)
	for _, want := range []string{
		`handler Cast: ERROR: invalid input syntax for type integer: "abc" (SQLSTATE 22P02)`,
		`handler Column: ERROR: column "nope" of relation "rm" does not exist (SQLSTATE 42703)`,
		`handler Function: ERROR: function no_such_function(jsonb) does not exist`,
		`handler Proc: ERROR: procedure no_such_procedure(bigint) does not exist`,
	} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "Good")
	require.NotContains(t, err.Error(), "Call")
	require.NotContains(t, err.Error(), "reset", "the leader's check leaves the reset SQL to `projectord reset`")

	// `config validate --check-db` reports the same, and the reset SQL too.
	problems, err := sink.Check(tb.ctx, tb.pool)
	require.NoError(t, err)
	var refused []string
	for _, p := range problems {
		refused = append(refused, p.EventType)
	}
	require.Equal(t, []string{"Cast", "Column", "Function", "Proc", "reset"}, refused)

	// Nothing ran, and the check left nothing behind on the connections.
	var rows int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm`).Scan(&rows))
	require.Zero(t, rows)
	require.ErrorIs(t, store.NewTarget(tb.pool, 10*time.Second).CheckSink(tb.ctx, sink), store.ErrBadHandler)
	good, err := store.CompileSQLSink(map[string]string{"Good": `INSERT INTO rm VALUES (@stream_id, 1)`}, "")
	require.NoError(t, err)
	require.NoError(t, store.NewTarget(tb.pool, 10*time.Second).CheckSink(tb.ctx, good))
}

// A check that cannot finish (here: a table locked by a migration, until
// the target's timeout) is not a verdict on the handlers.
func TestSinkCheckTimeoutIsNotABadHandler(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE rm (id text)`)
	require.NoError(t, err)
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(tb.ctx, `LOCK TABLE rm IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	sink, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO rm VALUES (@stream_id)`}, "")
	require.NoError(t, err)
	err = store.NewTarget(tb.pool, 300*time.Millisecond).CheckSink(tb.ctx, sink)
	require.Error(t, err)
	require.NotErrorIs(t, err, store.ErrBadHandler)
	require.Contains(t, []store.ErrorClass{store.ClassTransient, store.ClassTimeout, store.ClassNoAnswer}, store.Classify(err), "worth retrying: %v", err)

	require.NoError(t, tx.Rollback(tb.ctx))
	require.NoError(t, store.NewTarget(tb.pool, 10*time.Second).CheckSink(tb.ctx, sink))
}
