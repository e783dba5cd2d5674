package daemon

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// runUntilDone runs p on b and returns Run's result, failing the test if
// Run has not returned by the deadline.
func runUntilDone(t *testing.T, ctx context.Context, p runner.Projector, b runner.Backend, within time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := start(ctx, p, b)
	select {
	case err := <-done:
		return err
	case <-time.After(within):
		cancel()
		<-done
		t.Fatalf("Run did not return within %s", within)
		return nil
	}
}

// rivalOnCommit claims the projector for another node just before the
// first batch with events commits: that batch is in flight when its
// leader is deposed.
type rivalOnCommit struct {
	*runner.PGBackend
	target *store.Target
	fenced atomic.Bool
}

func (r *rivalOnCommit) Commit(ctx context.Context, req store.CommitRequest) error {
	if len(req.Events) > 0 && r.fenced.CompareAndSwap(false, true) {
		if _, err := r.target.Claim(ctx, req.Projector, "rival", 0, store.OrderXID8); err != nil {
			return err
		}
	}
	return r.PGBackend.Commit(ctx, req)
}

func (tb *pgBundle) count(t *testing.T, query string, args ...any) (n int) {
	t.Helper()
	require.NoError(t, tb.pool.QueryRow(tb.ctx, query, args...).Scan(&n))
	return n
}

func TestPGProcedureCommitCannotEscapeTheFence(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE PROCEDURE record_committed(p bigint) LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO applied (projector, position) VALUES ('escape', p);
			COMMIT;
		END $$`)
	require.NoError(t, err)
	tb.appendEvents(t, 20, 20, "A")
	cfg := tb.config(t, config.Projector{Name: "escape",
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: "dead_letter"},
		Sink:    config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": `CALL record_committed(@position)`}}}})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	b := tb.backend(t, cfg, "node-a")
	charged := func(t *testing.T) {
		t.Helper()
		require.Zero(t, tb.count(t, `SELECT count(*) FROM applied`), "rows of a batch that never committed persisted")
		require.Zero(t, tb.count(t, `SELECT count(*) FROM projectord.dead_letters`), "an event was dead-lettered")
		c := tb.checkpoint(t, "escape")
		require.True(t, c.Cursor.IsZero(), "an event was passed over: checkpoint at %s", c.Cursor)
		require.Zero(t, c.EventsApplied)
	}

	// A rival claims while the first batch is in flight.
	rb := &rivalOnCommit{PGBackend: b, target: store.NewTarget(tb.pool, 30*time.Second)}
	err = runUntilDone(t, tb.ctx, p, rb, time.Minute)
	require.True(t, rb.fenced.Load(), "a batch was in flight when the rival claimed")
	require.True(t, errorsIsAny(err, runner.ErrHalted, runner.ErrDeposed), "got %v", err)
	charged(t)

	// Unfenced (as the rival would run it): the procedure's COMMIT fails
	// for every event alike; the projector halts and charges none of them.
	err = runUntilDone(t, tb.ctx, p, b, time.Minute)
	require.ErrorIs(t, err, runner.ErrHalted)
	charged(t)
	c := tb.checkpoint(t, "escape")
	require.Equal(t, store.StatusHalted, c.Status)
	require.Contains(t, c.LastError, "handler A:")
	require.Contains(t, c.LastError, "invalid transaction termination (SQLSTATE 2D000)")
}

func TestPGHandlerRefusedAtStartHaltsWithoutChargingEvents(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE nums (projector text, n int)`)
	require.NoError(t, err)
	tb.appendEvents(t, 30, 10, "A")
	handlers := map[string]struct{ sql, sqlErr string }{
		// Fine for the parser; the planner folds the cast and fails.
		"cast":     {`INSERT INTO nums SELECT '%s', 'abc'::text::int WHERE @position > 0`, `invalid input syntax for type integer: "abc" (SQLSTATE 22P02)`},
		"column":   {`INSERT INTO nums (projector, nope) VALUES ('%s', @position)`, `column "nope" of relation "nums" does not exist (SQLSTATE 42703)`},
		"function": {`INSERT INTO nums VALUES ('%s', no_such_function(@position))`, `function no_such_function(bigint) does not exist (SQLSTATE 42883)`},
	}
	var projectors []config.Projector
	for kind, h := range handlers {
		for _, then := range []string{"dead_letter", "skip"} {
			name := kind + "-" + then
			projectors = append(projectors, config.Projector{Name: name,
				OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: runner.Then(then)},
				Sink:    config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": fmt.Sprintf(h.sql, name)}}}})
		}
	}
	projectors = append(projectors, config.Projector{Name: "healthy"})
	d := tb.startDaemon(t, tb.config(t, projectors...), "node-a")
	tb.waitCaughtUp(t, "healthy")

	for kind, h := range handlers {
		for _, then := range []string{"dead_letter", "skip"} {
			name := kind + "-" + then
			waitState(t, d, name, runner.StateHalted)
			c := tb.checkpoint(t, name)
			require.Equal(t, store.StatusHalted, c.Status, name)
			require.Contains(t, c.LastError, "handler A: ERROR: "+h.sqlErr, name)
			require.True(t, c.Cursor.IsZero(), "%s: an event was passed over: checkpoint at %s", name, c.Cursor)
			require.Zero(t, c.EventsApplied, name)
			require.Zero(t, tb.count(t, `SELECT count(*) FROM projectord.dead_letters WHERE projector = $1`, name), "%s dead-lettered an event", name)
			require.Zero(t, tb.count(t, `SELECT count(*) FROM nums WHERE projector = $1`, name), name)
		}
	}
}

// lockAfterClaim takes an ACCESS EXCLUSIVE lock on a table right after the
// claim, as a migration might, so the handler check that follows waits on
// it until the target's timeout.
type lockAfterClaim struct {
	*runner.PGBackend
	tb    *pgBundle
	table string
	tx    chan pgx.Tx
}

func (l *lockAfterClaim) Claim(ctx context.Context, projector string) (store.Checkpoint, error) {
	c, err := l.PGBackend.Claim(ctx, projector)
	if err != nil {
		return c, err
	}
	tx, err := l.tb.pool.Begin(ctx)
	if err != nil {
		return c, err
	}
	if _, err := tx.Exec(ctx, "LOCK TABLE "+l.table+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		_ = tx.Rollback(ctx)
		return c, err
	}
	l.tx <- tx
	return c, nil
}

func TestPGHandlerCheckThatCannotFinishIsRetriedNotHalted(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE rm (position bigint PRIMARY KEY)`)
	require.NoError(t, err)
	tb.appendEvents(t, 10, 10, "A")
	cfg := tb.config(t, config.Projector{Name: "locked", Sink: config.Sink{SQL: &config.SQLSink{
		Handlers: map[string]string{"A": `INSERT INTO rm VALUES (@position)`}}}})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	b := tb.backend(t, cfg, "node-a")
	sink, err := store.CompileSQLSink(cfg.Projectors[0].Sink.SQL.Handlers, "")
	require.NoError(t, err)
	b.AddProjector("locked", store.NewTarget(tb.pool, 2*time.Second), sink)

	lb := &lockAfterClaim{PGBackend: b, tb: tb, table: "rm", tx: make(chan pgx.Tx, 1)}
	err = runUntilDone(t, tb.ctx, p, lb, time.Minute)
	require.Error(t, err)
	require.NotErrorIs(t, err, runner.ErrHalted)
	require.ErrorContains(t, err, "error checking the sink of locked")
	c := tb.checkpoint(t, "locked")
	require.Equal(t, store.StatusRunning, c.Status)
	require.Empty(t, c.LastError)
	require.NoError(t, (<-lb.tx).Rollback(tb.ctx))

	// Retried once the lock is gone, as the supervisor does.
	ctx, cancel := context.WithCancel(tb.ctx)
	done := start(ctx, p, b)
	tb.waitCaughtUp(t, "locked")
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 10, tb.count(t, `SELECT count(*) FROM rm`))
}
