package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// Tests of issue #18's operator commands: pause, resume and the
// dead-letter commands, against real replicas and a real PostgreSQL.

// writers starts n writers that each insert one to three events of type A
// per transaction, every few milliseconds, until stop (or the test) ends
// them.
func (ob *obsBundle) writers(t *testing.T, n int) (stop func()) {
	t.Helper()
	pool, err := pgxpool.New(ob.ctx, ob.url)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(3 * time.Millisecond)
			defer tick.Stop()
			for k := 0; ; k++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				_, _ = pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
					SELECT 'w-' || gen_random_uuid(), 1, 'A', '{"n": 1}' FROM generate_series(1, $1) g`, 1+(i+k)%3)
			}
		}()
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait(); pool.Close() }) }
	t.Cleanup(stop)
	return stop
}

func (ob *obsBundle) count(t *testing.T, q string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, ob.pool.QueryRow(ob.ctx, q, args...).Scan(&n))
	return n
}

// readModelOf is p's read model and checkpoint, without the epoch (a new
// leader's claim bumps it and moves nothing).
func (ob *obsBundle) readModelOf(t *testing.T, projector string) string {
	t.Helper()
	var s string
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT format('applied %s rows, sum %s, max %s; checkpoint %s/%s, %s applied',
			count(a.*), coalesce(sum(a.position), 0), coalesce(max(a.position), 0), c.last_xid, c.last_position, c.events_applied)
		FROM projectord.checkpoints c LEFT JOIN applied a ON a.projector = c.projector
		WHERE c.projector = $1 GROUP BY c.last_xid, c.last_position, c.events_applied`, projector).Scan(&s))
	return s
}

// requireOracle waits until every event of type A is applied to
// projector's read model, then checks each is there exactly once and
// nothing else is.
func (ob *obsBundle) requireOracle(t *testing.T, projector string, d time.Duration) {
	t.Helper()
	missing := func() int64 {
		return ob.count(t, `SELECT count(*) FROM events e WHERE e.event_type = 'A'
			AND NOT EXISTS (SELECT 1 FROM applied a WHERE a.projector = $1 AND a.position = e.global_position)`, projector)
	}
	waitFor(t, d, func() bool { return missing() == 0 })
	require.Zero(t, ob.count(t, `SELECT count(*) FROM (SELECT position FROM applied WHERE projector = $1
		GROUP BY position HAVING count(*) > 1) d`, projector), "an event applied twice")
	require.Zero(t, ob.count(t, `SELECT count(*) FROM applied a WHERE a.projector = $1
		AND NOT EXISTS (SELECT 1 FROM events e WHERE e.global_position = a.position AND e.event_type = 'A')`, projector),
		"an applied row without its event")
}

// statusState is the projector's state and leader in `projectord status -o json`.
func statusState(t *testing.T, cfgFile, projector string) (state, leader string) {
	t.Helper()
	code, out, stderr := cli(t, "status", "-o", "json", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	var doc statusDoc
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	for _, p := range doc.Projectors {
		if p.Name == projector {
			if p.Leader != nil {
				leader = p.Leader.Node
			}
			if p.State == statePaused {
				require.NotNil(t, p.Pause, "a paused projector's status carries who paused it")
				require.Contains(t, p.Pause.By, "projectord pause")
			}
			return p.State, leader
		}
	}
	t.Fatalf("projector %s missing from status", projector)
	return "", ""
}

// TestPauseHoldsWhileWritersRunAndResumeIsExact: four writers run
// throughout. Once `projectord pause` returns, p's read model and
// checkpoint stay exactly as they were while the writers add hundreds of
// events (long enough for the leader's status refresh to count them as
// lag); status and the leader's metrics say paused and the leader keeps
// the lock. The leader is killed -9 while paused: the other replica takes
// the lock and stays paused, and still nothing is applied. After `resume`
// the read model equals the oracle: every event once.
func TestPauseHoldsWhileWritersRunAndResumeIsExact(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 100)
	projectors := sinkYAML("p")
	procs, bases := map[string]*proc{}, map[string]string{}
	var cfgFile string
	for _, n := range []string{"r1", "r2"} {
		procs[n], bases[n], cfgFile = ob.truthReplica(t, n, ob.url, 200*time.Millisecond, projectors)
	}
	waitFor(t, 30*time.Second, func() bool { return ob.lockHolder(t, "p") != "" })
	stop := ob.writers(t, 4)
	waitFor(t, 60*time.Second, func() bool {
		return ob.count(t, `SELECT count(*) FROM applied WHERE projector = 'p'`) > 300
	})

	code, out, stderr := cli(t, "pause", "p", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "p paused")
	frozen := ob.readModelOf(t, "p")
	epoch := ob.count(t, `SELECT epoch FROM projectord.checkpoints WHERE projector = 'p'`)

	// unchanged samples the read model at every poll while waiting for
	// the writers to add min events, and for the leader's status refresh
	// to have run at least three times meanwhile (three lag values), the
	// last counting them.
	unchanged := func(what string, leader string, min int64) {
		t.Helper()
		written := ob.count(t, `SELECT count(*) FROM events`)
		samples := 0
		lags := map[float64]bool{}
		waitFor(t, 90*time.Second, func() bool {
			require.Equal(t, frozen, ob.readModelOf(t, "p"), "%s: applied while paused", what)
			samples++
			m, err := scrape(bases[leader])
			if err != nil {
				return false
			}
			lag := m[series("projector_lag_events", "p")]
			lags[lag] = true
			return len(lags) >= 3 && ob.count(t, `SELECT count(*) FROM events`) >= written+min && lag >= float64(min)
		})
		t.Logf("%s: read model unchanged over %d samples and %d status refreshes while %d events were written", what, samples,
			len(lags), ob.count(t, `SELECT count(*) FROM events`)-written)
	}

	var leader string
	waitFor(t, 30*time.Second, func() bool {
		leader = ob.lockHolder(t, "p")
		if leader == "" {
			return false
		}
		m, err := scrape(bases[leader])
		if err != nil || m[series("projector_state", "p", `state="paused"`)] != 1 || m[series("projector_leader", "p")] != 1 {
			return false
		}
		st, ld := statusState(t, cfgFile, "p")
		return st == statePaused && ld == leader
	})
	// /status says it too: this replica's state and the recorded status.
	code, body := get(bases[leader] + "/status")
	require.Equal(t, 200, code)
	var sn struct {
		Projectors []struct {
			Name   string `json:"name"`
			State  string `json:"state"`
			Status string `json:"status"`
		} `json:"projectors"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &sn))
	require.Len(t, sn.Projectors, 1)
	require.Equal(t, "paused", sn.Projectors[0].State)
	waitFor(t, 10*time.Second, func() bool {
		_, body := get(bases[leader] + "/status")
		return json.Unmarshal([]byte(body), &sn) == nil && len(sn.Projectors) == 1 && sn.Projectors[0].Status == "paused"
	})
	unchanged("paused", leader, 300)
	require.Equal(t, leader, ob.lockHolder(t, "p"), "the paused leader keeps its lock")
	// The refusal is the pause, not a failure: no error, no failed batch.
	m, err := scrape(bases[leader])
	require.NoError(t, err)
	for k, v := range m {
		if strings.Contains(k, `projector="p"`) && (strings.HasPrefix(k, "projectord_projector_errors_total") ||
			strings.HasPrefix(k, "projectord_batches_total") && !strings.Contains(k, `result="committed"`)) {
			require.Zero(t, v, k)
		}
	}
	require.Positive(t, m[series("batches_total", "p", `result="committed"`)])

	// The leader dies while paused: the other replica leads, paused.
	other := "r1"
	if leader == "r1" {
		other = "r2"
	}
	require.NoError(t, procs[leader].cmd.Process.Signal(syscall.SIGKILL))
	_ = procs[leader].wait(t, 15*time.Second)
	waitFor(t, 30*time.Second, func() bool {
		if ob.lockHolder(t, "p") != other {
			return false
		}
		m, err := scrape(bases[other])
		return err == nil && m[series("projector_state", "p", `state="paused"`)] == 1
	})
	require.Greater(t, ob.count(t, `SELECT epoch FROM projectord.checkpoints WHERE projector = 'p'`), epoch, "the new leader claimed")
	st, _ := statusState(t, cfgFile, "p")
	require.Equal(t, statePaused, st)
	code, out, stderr = cli(t, "status", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	require.Regexp(t, `p was paused by projectord pause \(.+\) .* ago .*; it applies nothing until `+"`projectord resume p`", out)
	unchanged("paused after the leader's kill", other, 300)

	code, out, stderr = cli(t, "resume", "p", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "p resumed")
	waitFor(t, 30*time.Second, func() bool {
		m, err := scrape(bases[other])
		return err == nil && m[series("projector_state", "p", `state="leader"`)] == 1
	})
	stop()
	ob.requireOracle(t, "p", 90*time.Second)
	t.Logf("oracle exact: %d events applied once each", ob.count(t, `SELECT count(*) FROM applied WHERE projector = 'p'`))
}

// deadLetterProjector is p under on_error dead_letter. broken: its handler
// fails for data {"n": "x"}; fixed: it does not.
func deadLetterProjector(broken bool) string {
	handler := "INSERT INTO applied VALUES ('p', @position)"
	if broken {
		handler = "INSERT INTO applied VALUES ('p', @position + coalesce((@data->>'n')::int, 0) * 0)"
	}
	return fmt.Sprintf(`  - name: p
    batch_size: 20
    on_error: {max_attempts: 2, initial: 1ms, max: 5ms, then: dead_letter}
    sink: {sql: {handlers: {A: "%s"}}}
`, handler)
}

// TestDeadLetterRetryAfterFixingTheHandler: a handler fails for three
// events, which are dead-lettered while a writer runs. list shows them;
// a retry of a position not in the table is refused (exit 2, nothing
// changed); a retry under the broken handler fails again, keeps the row
// and does not halt the projector. A retry requested while no replica runs
// says so and is applied by the next leader when it starts, on the fixed
// handler; then retry --position, then --all, apply the others:
// dead_letters is empty and the read model equals the oracle.
func TestDeadLetterRetryAfterFixingTheHandler(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 30)
	var bad []int64
	for i := range 3 {
		var pos int64
		require.NoError(t, ob.pool.QueryRow(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
			VALUES ($1, 1, 'A', '{"n": "x"}') RETURNING global_position`, fmt.Sprintf("bad-%d", i)).Scan(&pos))
		bad = append(bad, pos)
		ob.insert(t, 10)
	}
	p1, _, cfgFile := ob.truthReplica(t, "r1", ob.url, 200*time.Millisecond, deadLetterProjector(true))
	waitFor(t, 30*time.Second, func() bool { return ob.lockHolder(t, "p") == "r1" })
	ob.writer(t, 20*time.Millisecond, 2)
	waitFor(t, 60*time.Second, func() bool {
		return ob.count(t, `SELECT count(*) FROM projectord.dead_letters WHERE projector = 'p'`) == 3
	})

	code, out, stderr := cli(t, "dead-letters", "list", "p", "-o", "json", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	var docs []deadLetterDoc
	require.NoError(t, json.Unmarshal([]byte(out), &docs))
	require.Len(t, docs, 3)
	for i, d := range docs {
		require.Equal(t, "p", d.Projector)
		require.Equal(t, bad[i], d.Position)
		require.Equal(t, bad[i], d.Cursor.Position)
		require.NotZero(t, d.Cursor.XID)
		require.Equal(t, "A", d.EventType)
		require.Equal(t, fmt.Sprintf("bad-%d", i), d.StreamID)
		require.Contains(t, d.Error, "invalid input syntax")
		require.Equal(t, 2, d.Attempts)
		require.False(t, d.RetryRequested)
		require.False(t, d.FailedAt.IsZero())
	}
	code, out, stderr = cli(t, "dead-letters", "list", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "PROJECTOR")
	require.Contains(t, out, fmt.Sprintf(" %d ", bad[1]))

	deadLetters := func() string {
		var s string
		require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT coalesce(string_agg(d::text, E'\n' ORDER BY d.id), '')
			FROM projectord.dead_letters d`).Scan(&s))
		return s
	}
	before := deadLetters()
	code, _, stderr = cli(t, "dead-letters", "retry", "p", "--position", "999999", "--config", cfgFile)
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, "no dead letter at position 999999")
	require.Equal(t, before, deadLetters(), "a refused retry changed nothing")

	// Still broken: the retry fails again, the row stays, p goes on.
	code, out, stderr = cli(t, "dead-letters", "retry", "p", "--position", fmt.Sprint(bad[0]), "--config", cfgFile)
	require.Equal(t, exitRuntime, code, out+stderr)
	require.Contains(t, out, fmt.Sprintf("position %d: failed again", bad[0]))
	require.Equal(t, int64(3), ob.count(t, `SELECT attempts FROM projectord.dead_letters WHERE position = $1`, bad[0]))
	require.Zero(t, ob.count(t, `SELECT count(*) FROM projectord.dead_letters WHERE retry_requested_at IS NOT NULL`))
	applied := ob.count(t, `SELECT count(*) FROM applied`)
	waitFor(t, 30*time.Second, func() bool { return ob.count(t, `SELECT count(*) FROM applied`) > applied+20 })
	require.Equal(t, "running", func() string {
		var s string
		require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT status FROM projectord.checkpoints WHERE projector = 'p'`).Scan(&s))
		return s
	}(), "a retry that fails again does not halt the projector")

	// The fix is deployed: the replica stops, and restarts with the fixed
	// handler. A retry requested while no replica leads says so, and the
	// next leader carries it out when it starts.
	require.NoError(t, p1.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p1.wait(t, 30*time.Second))
	code, out, stderr = cli(t, "dead-letters", "retry", "p", "--position", fmt.Sprint(bad[2]), "--config", cfgFile)
	require.Equal(t, exitRuntime, code, out+stderr)
	require.Contains(t, out, "retry of 1 dead letter of p requested")
	require.Contains(t, stderr, "no replica leads p now")
	code, out, _ = cli(t, "dead-letters", "list", "p", "-o", "json", "--config", cfgFile)
	require.Equal(t, exitOK, code)
	docs = nil
	require.NoError(t, json.Unmarshal([]byte(out), &docs))
	require.Len(t, docs, 3)
	require.True(t, docs[2].RetryRequested)
	require.NotNil(t, docs[2].RetryRequestedAt)
	_, _, cfgFixed := ob.truthReplica(t, "r2", ob.url, 200*time.Millisecond, deadLetterProjector(false))
	waitFor(t, 30*time.Second, func() bool { return ob.lockHolder(t, "p") == "r2" })
	waitFor(t, 30*time.Second, func() bool {
		return ob.count(t, `SELECT count(*) FROM projectord.dead_letters WHERE position = $1`, bad[2]) == 0
	})

	code, out, stderr = cli(t, "dead-letters", "retry", "p", "--position", fmt.Sprint(bad[1]), "--config", cfgFixed)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, fmt.Sprintf("position %d: applied", bad[1]))
	code, out, stderr = cli(t, "dead-letters", "retry", "p", "--all", "--config", cfgFixed)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, "1 applied, 0 failed again, 0 not handled yet")
	require.Zero(t, ob.count(t, `SELECT count(*) FROM projectord.dead_letters`))
	code, out, _ = cli(t, "dead-letters", "list", "p", "--config", cfgFixed)
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "no dead letters")
	ob.requireOracle(t, "p", 60*time.Second)
}

// schemaRows is every row of every table in schema projectord, as text.
func (ob *obsBundle) schemaRows(t *testing.T) string {
	t.Helper()
	rows, err := ob.pool.Query(ob.ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = 'projectord' AND table_type = 'BASE TABLE' ORDER BY table_name`)
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var n string
		require.NoError(t, rows.Scan(&n))
		tables = append(tables, n)
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, tables)
	var b strings.Builder
	for _, tbl := range tables {
		var s string
		require.NoError(t, ob.pool.QueryRow(ob.ctx, fmt.Sprintf(`SELECT coalesce(string_agg(t::text, E'\n' ORDER BY t::text), '')
			FROM projectord.%q t`, tbl)).Scan(&s))
		fmt.Fprintf(&b, "%s:\n%s\n", tbl, s)
	}
	return b.String()
}

// TestRefusedOperatorCommandsExit2AndChangeNothing: every refusal of the
// pause, resume and dead-letter commands (an unknown projector, one
// without a checkpoint or dead letters, an unknown position, flags that do
// not go together, a missing --yes, a retry of a paused projector) exits 2
// with a message naming the problem, and leaves every row of schema
// projectord as it was.
func TestRefusedOperatorCommandsExit2AndChangeNothing(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 5)
	cfgFile := replicaConfig(t, "op", ob.url, freePort(t), time.Second, "", "", sinkYAML("p", "q"))
	code, _, stderr := cli(t, "migrate", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	// p has a checkpoint and a dead letter; q is configured and never ran.
	target := store.NewTarget(ob.pool, 5*time.Second)
	_, err := target.Claim(ob.ctx, "p", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	_, err = ob.pool.Exec(ob.ctx, `INSERT INTO projectord.dead_letters (projector, xid, position, event_type, error, attempts)
		VALUES ('p', '5', 3, 'A', 'broken', 2)`)
	require.NoError(t, err)

	refusals := []struct {
		args []string
		says string
	}{
		{[]string{"pause", "nope"}, `no projector named "nope"`},
		{[]string{"pause", "q"}, "no checkpoint"},
		{[]string{"resume", "nope"}, `no projector named "nope"`},
		{[]string{"resume", "q"}, "no checkpoint"},
		{[]string{"dead-letters", "list", "nope"}, `no projector named "nope"`},
		{[]string{"dead-letters", "list", "p", "-o", "yaml"}, "--output must be table or json"},
		{[]string{"dead-letters", "retry", "nope", "--all"}, `no projector named "nope"`},
		{[]string{"dead-letters", "retry", "p"}, "--position P or --all"},
		{[]string{"dead-letters", "retry", "p", "--position", "3", "--all"}, "do not go together"},
		{[]string{"dead-letters", "retry", "p", "--position", "4"}, "no dead letter at position 4"},
		{[]string{"dead-letters", "retry", "q", "--all"}, "has no dead letters"},
		{[]string{"dead-letters", "discard", "nope", "--position", "3", "--yes"}, `no projector named "nope"`},
		{[]string{"dead-letters", "discard", "p", "--position", "3"}, "add --yes to confirm"},
		{[]string{"dead-letters", "discard", "p", "--yes"}, "--position P"},
		{[]string{"dead-letters", "discard", "p", "--position", "4", "--yes"}, "no dead letter at position 4"},
		{[]string{"dead-letters", "discard", "q", "--position", "3", "--yes"}, "no dead letter at position 3"},
	}
	check := func(args []string, says string) {
		t.Helper()
		before := ob.schemaRows(t)
		code, out, stderr := cli(t, append(args, "--config", cfgFile)...)
		require.Equal(t, exitConfig, code, "%v: %s%s", args, out, stderr)
		require.Contains(t, stderr, says, "%v", args)
		require.Equal(t, before, ob.schemaRows(t), "%v changed the database", args)
	}
	for _, r := range refusals {
		check(r.args, r.says)
	}

	code, _, stderr = cli(t, "pause", "p", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	check([]string{"dead-letters", "retry", "p", "--all"}, "p is paused")
	// A second pause is no refusal, and changes nothing either.
	before := ob.schemaRows(t)
	code, out, stderr := cli(t, "pause", "p", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "already paused")
	require.Equal(t, before, ob.schemaRows(t))
}

// TestDeadLettersTableEscapesEventData: a producer-written stream id or
// error cannot drive the operator's terminal.
func TestDeadLettersTableEscapesEventData(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	printDeadLetters(&b, []deadLetterDoc{deadLetterDocOf(store.DeadLetterRow{Projector: "p", Cursor: store.Cursor{XID: 7, Position: 3},
		EventType: "A", StreamID: hostileStream, Error: "bad \x1b]0;owned\x07 value", Attempts: 2, FailedAt: time.Now()})})
	require.NotContains(t, b.String(), "\x1b")
	require.NotContains(t, b.String(), "\x07")
	require.Contains(t, b.String(), `card-\x1b[2J`)
}
