package main

import (
	"encoding/json"
	"errors"
	"fmt"
	neturl "net/url"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/netproxy"
	"github.com/projectord/projectord/internal/runner"
)

// Tests of issue #12: what /metrics and /status say, sampled against the
// truth in the database (checkpoints, pg_locks, the events table).

// truthReplica starts a replica of projectors on url (the database, or a
// proxy to it), with a status refresh every refresh.
func (ob *obsBundle) truthReplica(t *testing.T, node, url string, refresh time.Duration, projectors string) (*proc, string, string) {
	t.Helper()
	port := freePort(t)
	f := replicaConfig(t, node, url, port, refresh, ", query_timeout: 2s, connect_timeout: 2s", ", tcp_user_timeout: 2s", projectors)
	p := startProc(t, "run", "--config", f)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, 30*time.Second, func() bool { code, _ := get(base + "/livez"); return code == 200 })
	return p, base, f
}

// lockHolder is the node whose coordination backend holds projector's
// advisory lock now, or "".
func (ob *obsBundle) lockHolder(t *testing.T, projector string) string {
	t.Helper()
	var node string
	err := ob.pool.QueryRow(ob.ctx, `SELECT n.node_id FROM pg_locks l
		JOIN projectord.projectors p ON p.id = l.objid::int AND p.name = $1
		JOIN projectord.nodes n ON n.backend_pid = l.pid
		WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted`, projector).Scan(&node)
	var pgErr *pgconn.PgError
	if err == pgx.ErrNoRows || (errors.As(err, &pgErr) && pgErr.Code == "42P01") { // none yet, or no schema yet
		return ""
	}
	require.NoError(t, err)
	return node
}

// lagTruth counts the events of type A after the projector's checkpoint.
func (ob *obsBundle) lagTruth(t *testing.T, projector string) (lag, position int64) {
	t.Helper()
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT count(e.*), c.last_position FROM projectord.checkpoints c
		LEFT JOIN events e ON (e.transaction_id, e.global_position) > (c.last_xid, c.last_position) AND e.event_type = 'A'
		WHERE c.projector = $1 GROUP BY c.last_position`, projector).Scan(&lag, &position))
	return lag, position
}

func series(name, projector string, labels ...string) string {
	// Labels in the exposition's order: sorted by name.
	l := append([]string{fmt.Sprintf(`projector=%q`, projector)}, labels...)
	sort.Strings(l)
	return fmt.Sprintf("projectord_%s{%s}", name, strings.Join(l, ","))
}

// TestHaltIsARecordEveryReplicaSees: a halt is the database's fact. Every
// replica reports it and the projector's lag; nobody leads it; the poison
// event is counted once; a restart with the same handlers does not clear
// it; `projectord resume` does, on every replica, and a kill of the next
// leader is then survived like any other (before, the other replicas kept
// "halted" and never competed again).
func TestHaltIsARecordEveryReplicaSees(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 40)
	_, err := ob.pool.Exec(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('bad', 1, 'A', '{"n": "x"}')`)
	require.NoError(t, err)
	ob.insert(t, 40)
	projectors := `  - name: p
    batch_size: 25
    on_error: {max_attempts: 2, initial: 1ms, max: 5ms, then: halt}
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES ('p', @position + coalesce((@data->>'n')::int, 0) * 0)"}}}
` + sinkYAML("q")
	nodes := []string{"h1", "h2", "h3"}
	procs, bases, files := map[string]*proc{}, map[string]string{}, map[string]string{}
	for _, n := range nodes {
		procs[n], bases[n], files[n] = ob.truthReplica(t, n, ob.url, 200*time.Millisecond, projectors)
	}
	halted := func() (epoch int64, ok bool) {
		var status string
		return epoch, ob.pool.QueryRow(ob.ctx, `SELECT status, epoch FROM projectord.checkpoints WHERE projector = 'p'`).Scan(&status, &epoch) == nil && status == "halted"
	}
	waitFor(t, 60*time.Second, func() bool { _, ok := halted(); return ok })
	haltEpoch, _ := halted()
	ob.insert(t, 30) // the halted projector falls further behind

	// Every replica converges on the database's view, and then every
	// sample agrees with it.
	agree := func() error {
		lag, pos := ob.lagTruth(t, "p")
		if h := ob.lockHolder(t, "p"); h != "" {
			return fmt.Errorf("%s holds the lock of a halted projector", h)
		}
		for _, n := range nodes {
			m, err := scrape(bases[n])
			if err != nil {
				return err
			}
			switch {
			case m[series("projector_state", "p", `state="halted"`)] != 1:
				return fmt.Errorf("%s: state halted is not 1", n)
			case m[series("projector_leader", "p")] != 0:
				return fmt.Errorf("%s: leads a halted projector", n)
			}
			got, ok := m[series("projector_lag_events", "p")]
			if !ok || int64(got) != lag {
				return fmt.Errorf("%s: lag_events %v (exported %v), the database says %d", n, got, ok, lag)
			}
			if cp := m[series("projector_checkpoint_position", "p")]; int64(cp) != pos {
				return fmt.Errorf("%s: checkpoint %v, the database says %d", n, cp, pos)
			}
			if m[series("projector_lag_seconds", "p")] <= 0 {
				return fmt.Errorf("%s: lag_seconds is 0 for a projector 31 events behind", n)
			}
		}
		return nil
	}
	var last error
	waitFor(t, 30*time.Second, func() bool { last = agree(); return last == nil })
	for i := 0; i < 20; i++ {
		require.NoError(t, agree(), "sample %d", i)
	}
	// One poison event, counted once, by the replica that decided it.
	var poison, poisonErrs float64
	for _, n := range nodes {
		m, err := scrape(bases[n])
		require.NoError(t, err)
		poison += m[series("poison_events_total", "p", `outcome="halted"`)]
		poisonErrs += m[series("projector_errors_total", "p", `reason="poison"`)]
		require.Zero(t, m[series("poison_events_total", "p", `outcome="skipped"`)])
	}
	require.Equal(t, 1.0, poison)
	require.Equal(t, 1.0, poisonErrs)

	// A restart with the same handlers keeps it halted.
	require.NoError(t, procs["h1"].cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, procs["h1"].wait(t, 15*time.Second))
	procs["h1"], bases["h1"], files["h1"] = ob.truthReplica(t, "h1", ob.url, 200*time.Millisecond, projectors)
	waitFor(t, 30*time.Second, func() bool { last = agree(); return last == nil })
	epoch, still := halted()
	require.True(t, still)
	require.Equal(t, haltEpoch, epoch, "no replica claimed it")

	// The data is fixed and the operator resumes it.
	_, err = ob.pool.Exec(ob.ctx, `UPDATE events SET data = '{}' WHERE stream_id = 'bad'`)
	require.NoError(t, err)
	code, out, stderr := cli(t, "resume", "p", "--config", files["h2"])
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "p resumed")
	leaderOf := func() (string, error) {
		leader := ""
		for _, n := range nodes {
			m, err := scrape(bases[n])
			if err != nil {
				return "", err
			}
			if m[series("projector_state", "p", `state="halted"`)] != 0 {
				return "", fmt.Errorf("%s still reports halted", n)
			}
			if m[series("projector_leader", "p")] == 1 {
				if leader != "" {
					return "", fmt.Errorf("two leaders: %s and %s", leader, n)
				}
				leader = n
			}
		}
		return leader, nil
	}
	var leader string
	waitFor(t, 30*time.Second, func() bool { leader, last = leaderOf(); return last == nil && leader != "" })
	caughtUp := func() bool { lag, _ := ob.lagTruth(t, "p"); return lag == 0 }
	waitFor(t, 30*time.Second, caughtUp)

	// The next leader dies: another one takes over, as for any projector.
	require.NoError(t, procs[leader].cmd.Process.Kill())
	<-procs[leader].exited
	ob.insert(t, 10)
	alive := []string{}
	for _, n := range nodes {
		if n != leader {
			alive = append(alive, n)
		}
	}
	waitFor(t, 30*time.Second, func() bool {
		h := ob.lockHolder(t, "p")
		return (h == alive[0] || h == alive[1]) && caughtUp()
	})
	var applied, distinct, events int
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT count(*), count(DISTINCT position) FROM applied WHERE projector = 'p'`).Scan(&applied, &distinct))
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT count(*) FROM events`).Scan(&events))
	require.Equal(t, events, applied, "every event applied")
	require.Equal(t, applied, distinct, "and once")
}

// TestLagCountsOnlyHandledEvents: lag and progress are defined on the same
// events. A projector whose handlers match none of a busy source's events
// has no lag (before, it showed the passed-over events as lag while
// events_processed_total stayed 0: "stalled").
func TestLagCountsOnlyHandledEvents(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	projectors := `  - name: picky
    sink: {sql: {handlers: {Z: "INSERT INTO applied VALUES ('picky', @position)"}}}
  - name: busy
    batch_size: 5
    sink: {sql: {handlers: {A: "INSERT INTO applied SELECT 'busy', @position FROM pg_sleep(0.01)"}}}
`
	_, base, _ := ob.truthReplica(t, "l1", ob.url, 100*time.Millisecond, projectors)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := ob.pool.Exec(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
				SELECT 's-' || gen_random_uuid(), 1, 'A', '{}' FROM generate_series(1, 20)`); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	var busyLag, samples int
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		m, err := scrape(base)
		require.NoError(t, err)
		if v, ok := m[series("projector_lag_events", "picky")]; ok {
			samples++
			require.Zero(t, v, "picky has no handled event to lag behind")
			require.Zero(t, m[series("projector_lag_seconds", "picky")])
		}
		if m[series("projector_lag_events", "busy")] > 0 {
			busyLag++
		}
	}
	require.Greater(t, samples, 10)
	require.Greater(t, busyLag, 0, "a projector whose handler is slower than the writer does lag")
	code, body := get(base + "/status")
	require.Equal(t, 200, code)
	var snap runner.Snapshot
	require.NoError(t, json.Unmarshal([]byte(body), &snap))
	for _, p := range snap.Projectors {
		if p.Name == "picky" {
			require.Zero(t, p.LagEvents)
		}
	}
}

// TestHeadNeverBelowCheckpoint: the head is refreshed every refresh
// interval and the checkpoint with every batch; no scrape shows a
// checkpoint past the head (before: 90 of 120 samples did).
func TestHeadNeverBelowCheckpoint(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	_, base, _ := ob.truthReplica(t, "hc", ob.url, 2*time.Second, sinkYAML("p"))
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			case <-time.After(5 * time.Millisecond): // the writer's pace, not a synchronisation
			}
			if _, err := ob.pool.Exec(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
				VALUES ('s-' || gen_random_uuid(), 1, 'A', '{}')`); err != nil {
				done <- err
				return
			}
		}
	}()
	var once sync.Once
	var writeErr error
	stopWriter := func() error {
		once.Do(func() { close(stop); writeErr = <-done })
		return writeErr
	}
	defer func() { _ = stopWriter() }()
	moved, samples := 0, 0
	first := -1.0
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m, err := scrape(base)
		require.NoError(t, err)
		cp, ok := m[series("projector_checkpoint_position", "p")]
		if !ok {
			continue
		}
		head, ok := m["projectord_source_head_position"]
		require.True(t, ok, "a checkpoint without a head")
		require.GreaterOrEqual(t, head, cp, "sample %d", samples)
		samples++
		if first < 0 {
			first = cp
		} else if cp > first {
			moved++
		}
	}
	require.NoError(t, stopWriter(), "the writer kept writing")
	require.Greater(t, samples, 50)
	require.Greater(t, moved, 0, "the checkpoint moved between head refreshes")
}

// TestDisconnectedReplicaExportsNothingStale: a replica cut off from the
// database stops exporting what it can no longer know (the horizon's age,
// the head, positions, lag) and /status says it is stale instead of
// listing it as the leader; the values come back when it reconnects.
func TestDisconnectedReplicaExportsNothingStale(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 20)
	u, err := neturl.Parse(ob.url)
	require.NoError(t, err)
	px := netproxy.New(t, u.Host)
	u.Host = px.Addr()
	cutURL := u.String()
	_, base, _ := ob.truthReplica(t, "cut", cutURL, 200*time.Millisecond, sinkYAML("p"))
	waitFor(t, 30*time.Second, func() bool { return ob.lockHolder(t, "p") == "cut" })

	// A transaction holding the horizon back, so the age is not 0.
	tx, err := ob.pool.Begin(ob.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ob.ctx) }()
	_, err = tx.Exec(ob.ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	stale := []string{"projectord_source_horizon_age_seconds", "projectord_source_head_position",
		series("projector_checkpoint_position", "p"), series("projector_lag_events", "p")}
	waitFor(t, 30*time.Second, func() bool {
		m, err := scrape(base)
		return err == nil && m["projectord_source_horizon_age_seconds"] > 0.3 && m[series("projector_lag_events", "p")] == 0
	})

	px.SetCut(true)
	waitFor(t, 30*time.Second, func() bool {
		m, err := scrape(base)
		if err != nil {
			return false
		}
		for _, s := range stale {
			if _, ok := m[s]; ok {
				return false
			}
		}
		return m[series("projector_leader", "p")] == 0
	})
	// It stays so while cut, whatever the transaction does meanwhile.
	require.NoError(t, tx.Rollback(ob.ctx))
	for i := 0; i < 10; i++ {
		m, err := scrape(base)
		require.NoError(t, err)
		for _, s := range stale {
			require.NotContains(t, m, s, "sample %d", i)
		}
		code, body := get(base + "/status")
		require.Equal(t, 200, code)
		var snap runner.Snapshot
		require.NoError(t, json.Unmarshal([]byte(body), &snap))
		require.True(t, snap.Stale, body)
		require.NotNil(t, snap.RefreshedAt)
		for _, p := range snap.Projectors {
			require.Empty(t, p.LeaderNode, "a stale replica names no leader")
		}
	}

	px.SetCut(false)
	waitFor(t, 60*time.Second, func() bool {
		m, err := scrape(base)
		_, head := m["projectord_source_head_position"]
		return err == nil && head && m["projectord_source_horizon_age_seconds"] < 0.3
	})
}
