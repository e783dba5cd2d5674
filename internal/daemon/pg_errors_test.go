package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// appendBad commits one event of type Bad and returns its position.
func (tb *pgBundle) appendBad(t *testing.T, typ string) int64 {
	t.Helper()
	var pos int64
	err := tb.pool.QueryRow(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ('bad', 1, $1, '{}') RETURNING global_position`, typ).Scan(&pos)
	require.NoError(t, err)
	return pos
}

// deadLetter returns the error and attempts recorded for projector's dead letter at pos.
func (tb *pgBundle) deadLetter(t *testing.T, projector string, pos int64) (msg string, attempts int) {
	t.Helper()
	err := tb.pool.QueryRow(tb.ctx, `SELECT error, attempts FROM projectord.dead_letters WHERE projector = $1 AND position = $2`,
		projector, pos).Scan(&msg, &attempts)
	require.NoError(t, err, "no dead letter for %s at %d", projector, pos)
	return msg, attempts
}

// checkAppliedBefore checks that projector applied exactly the events of
// type A before pos, each once, and nothing else.
func (tb *pgBundle) checkAppliedBefore(t *testing.T, projector string, pos int64) int {
	t.Helper()
	var want, got, distinct, after int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT
		(SELECT count(*) FROM events WHERE event_type = 'A' AND global_position < $2),
		(SELECT count(*) FROM applied WHERE projector = $1),
		(SELECT count(DISTINCT position) FROM applied WHERE projector = $1),
		(SELECT count(*) FROM applied WHERE projector = $1 AND position >= $2)`, projector, pos).Scan(&want, &got, &distinct, &after))
	require.Zero(t, after, "applied past the failing event")
	require.Equal(t, want, distinct, "every event before the failing one applied")
	require.Equal(t, got, distinct, "none applied twice")
	return want
}

// TestPGEventErrorsReachThePolicy: handler errors outside SQLSTATE classes
// 22/23/P0001 that are still the event's fault, and a deferred constraint
// that fails at commit (naming no event), end in the configured policy
// with every other event applied exactly once.
func TestPGEventErrorsReachThePolicy(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `
		CREATE TABLE big (v text);
		CREATE INDEX ON big (v);
		CREATE TABLE vt (n int);
		CREATE VIEW vpos AS SELECT * FROM vt WHERE n > 0 WITH CHECK OPTION;
		CREATE TABLE parent (id int PRIMARY KEY);
		CREATE TABLE child (ref int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
		CREATE FUNCTION must_be_negative(n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
		BEGIN
			ASSERT n < 0, 'position must be negative';
			RETURN n;
		END $$;`)
	require.NoError(t, err)
	tb.appendEvents(t, 30, 30, "A")
	bad := tb.appendBad(t, "Bad")
	tb.appendEvents(t, 30, 30, "A")

	type failing struct {
		name, then, sql, wantErr string
	}
	cases := []failing{
		{"card", "dead_letter", `INSERT INTO applied (projector, position, node) VALUES ('card', @position, (SELECT v FROM (VALUES ('a'), ('b')) t(v)))`,
			"more than one row returned by a subquery used as an expression (SQLSTATE 21000)"},
		{"assert", "halt", `SELECT must_be_negative(@position)`, "position must be negative (SQLSTATE P0004)"},
		{"toolong", "skip", `INSERT INTO big SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 320)`, "(SQLSTATE 54000)"},
		{"checkopt", "dead_letter", `INSERT INTO vpos VALUES (-1)`, `new row violates check option for view "vpos" (SQLSTATE 44000)`},
		{"deferred", "dead_letter", `INSERT INTO child VALUES (-1)`, `violates foreign key constraint "child_ref_fkey" (SQLSTATE 23503)`},
	}
	var projectors []config.Projector
	for _, c := range cases {
		projectors = append(projectors, config.Projector{Name: c.name,
			OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: runner.Then(c.then)},
			Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{
				"A":   fmt.Sprintf(`INSERT INTO applied (projector, position) VALUES ('%s', @position)`, c.name),
				"Bad": c.sql,
			}}}})
	}
	d := tb.startDaemon(t, tb.config(t, projectors...), "node-a")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.then == "halt" {
				waitState(t, d, c.name, runner.StateHalted)
				cp := tb.checkpoint(t, c.name)
				require.Equal(t, store.StatusHalted, cp.Status)
				require.Contains(t, cp.LastError, c.wantErr)
				require.Equal(t, 30, tb.checkAppliedBefore(t, c.name, bad))
				return
			}
			tb.waitCaughtUp(t, c.name)
			require.Equal(t, 60, tb.checkExactlyOnce(t, c.name, "A"))
			cp := tb.checkpoint(t, c.name)
			if c.then == "skip" {
				require.True(t, strings.HasPrefix(cp.LastError, "skipped "), cp.LastError)
				require.Contains(t, cp.LastError, c.wantErr)
				return
			}
			msg, attempts := tb.deadLetter(t, c.name, bad)
			require.Contains(t, msg, c.wantErr)
			require.Equal(t, 2, attempts)
		})
	}
}

// TestPGBatchOutOfTimeIsSplitThenPolicy: a handler that always outlasts
// query_timeout on one event (the server's statement_timeout stops it). The batch is split until that event is
// alone; it then times out max_attempts times and is dead-lettered, and
// every other event is applied exactly once.
func TestPGBatchOutOfTimeIsSplitThenPolicy(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	// Backends of timed-out batches stop sleeping soon after their
	// connection is closed, instead of holding the xmin horizon.
	_, err := tb.pool.Exec(tb.ctx, `DO $$ BEGIN
		EXECUTE format('ALTER DATABASE %I SET client_connection_check_interval = %L', current_database(), '200ms');
	END $$`)
	require.NoError(t, err)
	tb.appendEvents(t, 10, 10, "A")
	slow := tb.appendBad(t, "Slow")
	tb.appendEvents(t, 10, 10, "A")
	cfg := tb.config(t, config.Projector{Name: "slow",
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: "dead_letter"},
		Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{
			"A":    `INSERT INTO applied (projector, position) VALUES ('slow', @position)`,
			"Slow": `INSERT INTO applied (projector, position) SELECT 'slow', @position FROM pg_sleep(6)`,
		}}}})
	cfg.Database.QueryTimeout = 2 * time.Second
	tb.startDaemon(t, cfg, "node-a")
	want := tb.lastEvent(t)
	// About six time-outs of 2s: the batch of 21, then halves down to the
	// slow event, and its second attempt.
	require.Eventually(t, func() bool { return tb.peek("slow").Cursor == want }, 90*time.Second, 10*time.Millisecond,
		"the projector never got past the slow event")
	require.Equal(t, 20, tb.checkExactlyOnce(t, "slow", "A"))
	msg, attempts := tb.deadLetter(t, "slow", slow)
	require.Equal(t, 2, attempts)
	// The server stops the statement (statement_timeout, inside the
	// batch's deadline), so the slow event is told from a stalled server.
	require.Contains(t, msg, "statement timeout")
}

// TestPGGracefulStopEndsPoisonRetries: a daemon stopping while an event
// waits out a long retry backoff stops at once, dead-letters nothing, and
// leaves the checkpoint before the event.
func TestPGGracefulStopEndsPoisonRetries(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 10, 10, "A")
	bad := tb.appendBad(t, "Bad")
	tb.appendEvents(t, 10, 10, "A")
	cfg := tb.config(t, config.Projector{Name: "stuck",
		OnError: config.ErrorPolicy{MaxAttempts: 1000, Initial: time.Hour, Max: time.Hour, Then: "dead_letter"},
		Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{
			"A":   `INSERT INTO applied (projector, position) VALUES ('stuck', @position)`,
			"Bad": `INSERT INTO applied (projector, position) VALUES ('stuck', @position / 0)`,
		}}}})
	d := tb.startDaemon(t, cfg, "node-a")
	// The events before it are committed, then the event fails alone and
	// waits out its backoff: the stop must come during that wait, not while
	// the batch after the committed events is still being split.
	require.Eventually(t, func() bool {
		c := tb.peek("stuck")
		return c.Cursor.Position == bad-1 && strings.HasPrefix(c.LastError, "retrying: ")
	}, 30*time.Second, 5*time.Millisecond, "the poison event never began its retry backoff")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	began := time.Now()
	d.Stop(ctx)
	took := time.Since(began)
	require.Less(t, took, 10*time.Second, "the stop waited for the retry backoff")
	require.Equal(t, runner.StateStopped, d.States()["stuck"])
	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM projectord.dead_letters`).Scan(&n))
	require.Zero(t, n, "a stop dead-letters nothing")
	require.Equal(t, 10, tb.checkAppliedBefore(t, "stuck", bad))
	c := tb.checkpoint(t, "stuck")
	require.Equal(t, bad-1, c.Cursor.Position)
	require.True(t, strings.HasPrefix(c.LastError, "retrying: "), "the retry showed in last_error: %q", c.LastError)
	require.Contains(t, c.LastError, "failed 1 of at most 1000 times")
	require.Contains(t, c.LastError, "division by zero")
}
