package daemon

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
)

// TestPGHandlerLexedLikePostgresSkipsNothing: handlers that are valid SQL, where
// "@event_type" sits inside a string literal as PostgreSQL reads it, but the
// handler compiler reads it as code: a dollar-quote tag with a non-ASCII
// letter ($é$...$é$, allowed by PostgreSQL), and a typed literal whose type
// name ends in "e" (name'\'), which the compiler took for an escape string (E'...').
// The compiler rewrites the literal's "@event_type" into a parameter and so
// binds two arguments to a statement PostgreSQL sees with one. That fails
// for every event alike, client-side ("mismatched param and argument
// count"), passes the start-up check, and is charged to each event in turn:
// under `then: skip` every event is skipped.
func TestPGHandlerLexedLikePostgresSkipsNothing(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct{ handler, node string }{
		"dollar tag": {`INSERT INTO applied (projector, position, node) VALUES ('%s', @position, $é$ @event_type $é$)`, " @event_type "},
		"typed literal": {`INSERT INTO applied (projector, position, node) VALUES ('%s', @position, name'\' || ' @event_type ')`,
			`\ @event_type `},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tb := setupPG(t)
			tb.appendEvents(t, 5, 5, "A")
			cfg := tb.config(t, config.Projector{Name: "lx",
				OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: "skip"},
				Sink:    config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": fmt.Sprintf(c.handler, "lx")}}}})
			d := tb.startDaemon(t, cfg, "node-a")
			// Either every event is applied, or the projector refuses the
			// handler (halts) without passing over any event.
			want := tb.lastEvent(t)
			require.Eventually(t, func() bool {
				return tb.peek("lx").Cursor == want || d.States()["lx"] == runner.StateHalted
			}, 30*time.Second, 5*time.Millisecond)
			cp := tb.checkpoint(t, "lx")
			if d.States()["lx"] == runner.StateHalted {
				require.True(t, cp.Cursor.IsZero(), "halted after passing over events: %s (%s)", cp.Cursor, cp.LastError)
				return
			}
			require.Equal(t, 5, tb.checkExactlyOnce(t, "lx"), "last_error: %s", cp.LastError)
			var node string
			require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT node FROM applied LIMIT 1`).Scan(&node))
			require.Equal(t, c.node, node)
		})
	}
}

// TestPGEventSlowAsAWholeReachesThePolicy: one event whose handler and
// whose deferred constraint trigger (run at COMMIT) each stay under the
// server-side statement_timeout (3/4 of query_timeout), but together need
// longer than query_timeout. Every attempt ends with our own deadline,
// and the probe after it finds the server answering: a slow batch
// (ErrSlowBatch, ClassTimeout), which counts against a single event, so
// the error policy (halt) is reached. Each sleep is 0.7 s of the 0.75 s a
// statement may take, so the COMMIT would end 0.4 s after our deadline:
// the cancel pgx sends at the deadline has that long to reach the server
// before the COMMIT finishes (with 0.55 s each, 0.1 s, which a loaded
// machine missed once: the batch committed after its deadline).
func TestPGEventSlowAsAWholeReachesThePolicy(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `
		CREATE TABLE slow_rm (position bigint NOT NULL);
		CREATE FUNCTION slow_check() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.7); RETURN NULL; END $$;
		CREATE CONSTRAINT TRIGGER slow_check AFTER INSERT ON slow_rm DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW EXECUTE FUNCTION slow_check();`)
	require.NoError(t, err)
	tb.appendEvents(t, 1, 1, "A")
	cfg := tb.config(t, config.Projector{Name: "slow",
		Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": `INSERT INTO slow_rm SELECT @position FROM pg_sleep(0.7)`}}}})
	cfg.Database.QueryTimeout = time.Second
	d := tb.startDaemon(t, cfg, "node-a")
	// max_attempts 2 with millisecond backoff: a few seconds at most.
	halted := func() bool { return d.States()["slow"] == runner.StateHalted }
	if !assertEventually(t, halted, 20*time.Second) {
		t.Fatalf("the event never reached its error policy; last_error: %s", tb.peek("slow").LastError)
	}
}

// assertEventually polls cond until it holds or within passes.
func assertEventually(t *testing.T, cond func() bool, within time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
