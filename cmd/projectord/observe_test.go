package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgcluster"
	"github.com/projectord/projectord/internal/store/pgtest"
	"github.com/projectord/projectord/internal/testsupport"
)

// obsBundle is a database with a native events table and a read model.
type obsBundle struct {
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
}

func setupObs(t *testing.T) *obsBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(t.Context(), q)
		require.NoError(t, err)
	}
	_, err = pool.Exec(t.Context(), `CREATE TABLE applied (projector text NOT NULL, position bigint NOT NULL)`)
	require.NoError(t, err)
	return &obsBundle{ctx: t.Context(), url: url, pool: pool}
}

func (ob *obsBundle) insert(t *testing.T, n int) {
	t.Helper()
	_, err := ob.pool.Exec(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		SELECT 's-' || gen_random_uuid(), 1, 'A', '{}' FROM generate_series(1, $1) g`, n)
	require.NoError(t, err)
}

// freePort is a port for a replica or Prometheus started by the test.
func freePort(t *testing.T) int { return testsupport.Port(t) }

// replica starts a projectord process serving HTTP on a free port.
func (ob *obsBundle) replica(t *testing.T, node string, projectors string) (*proc, string) {
	t.Helper()
	return ob.replicaWith(t, node, "", projectors)
}

// replicaWith is replica with extra coordination settings (", key: value" each).
func (ob *obsBundle) replicaWith(t *testing.T, node, extraCoord, projectors string) (*proc, string) {
	t.Helper()
	port := freePort(t)
	f := replicaConfig(t, node, ob.url, port, 100*time.Millisecond, "", extraCoord, projectors)
	p := startProc(t, "run", "--config", f)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, 30*time.Second, func() bool { code, _ := get(base + "/livez"); return code == 200 })
	return p, base
}

// replicaConfig writes the configuration of a test replica: node on the
// database at dbURL, serving HTTP on port, refreshing its status every
// refresh, with extra database and coordination settings (", key: value"
// each) and the projectors' YAML.
func replicaConfig(t *testing.T, node, dbURL string, port int, refresh time.Duration, extraDB, extraCoord, projectors string) string {
	t.Helper()
	return writeFile(t, node+".yaml", fmt.Sprintf(`
database: {url: '%s'%s}
coordination: {node_id: %s, acquire_interval: 200ms, heartbeat_interval: 200ms, lease_timeout: 3s%s}
source: {poll_interval: 20ms}
metrics: {refresh_interval: %s}
http: {listen: "127.0.0.1:%d"}
shutdown_timeout: 5s
projectors:
%s`, dbURL, extraDB, node, extraCoord, refresh, port, projectors))
}

func get(url string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape returns metric samples keyed by "name{labels}".
func scrape(base string) (map[string]float64, error) {
	code, body := get(base + "/metrics")
	if code != 200 {
		return nil, fmt.Errorf("scrape %s: %d %s", base, code, body)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, err
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

func sinkYAML(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "  - name: %s\n    batch_size: 50\n    sink: {sql: {handlers: {'*': \"INSERT INTO applied VALUES ('%s', @position)\"}}}\n", n, n)
	}
	return b.String()
}

func TestMetricsShowAtMostOneLeaderThroughHandover(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 500)
	projectors := []string{"alpha", "beta", "gamma"}
	// Balancing off: the handover under test is the SIGTERM's. With it on,
	// node-b could take a share as soon as it joined (it did, on a busy
	// machine, before the test had seen node-a lead all three).
	a, baseA := ob.replicaWith(t, "node-a", ", balance: false", sinkYAML(projectors...))
	waitFor(t, 30*time.Second, func() bool {
		m, err := scrape(baseA)
		return err == nil && m[`projectord_projector_leader{projector="alpha"}`]+m[`projectord_projector_leader{projector="beta"}`]+
			m[`projectord_projector_leader{projector="gamma"}`] == 3
	})
	_, baseB := ob.replicaWith(t, "node-b", ", balance: false", sinkYAML(projectors...))
	var sent time.Time

	// Scrapes are not simultaneous. Scraping the standby first makes a
	// sample meaningful: a replica reports leadership only while it holds the
	// lock and clears it before releasing, so if B already leads when it is
	// scraped, A has stopped reporting by the time it is.
	leaderSums := func() (map[string]float64, map[string]float64, error) {
		sums := map[string]float64{}
		of := map[string]float64{}
		for _, base := range []string{baseB, baseA} {
			m, err := scrape(base)
			if err != nil {
				if base == baseA && !sent.IsZero() {
					continue // a process that stopped serving exports nothing
				}
				return nil, nil, err
			}
			for _, p := range projectors {
				v, ok := m[`projectord_projector_leader{projector="`+p+`"}`]
				if !ok {
					return nil, nil, fmt.Errorf("%s exports no projector_leader for %s", base, p)
				}
				sums[p] += v
				if base == baseA {
					of[p] = v
				}
			}
		}
		return sums, of, nil
	}
	allOnB := func() bool {
		m, err := scrape(baseB)
		if err != nil {
			return false
		}
		for _, p := range projectors {
			if m[`projectord_projector_leader{projector="`+p+`"}`] != 1 {
				return false
			}
		}
		return true
	}
	waitFor(t, 30*time.Second, func() bool {
		sums, _, err := leaderSums()
		if err != nil {
			return false
		}
		for _, p := range projectors {
			if sums[p] != 1 {
				return false
			}
		}
		return true
	})
	_, ofA, err := leaderSums()
	require.NoError(t, err)
	led := 0
	for _, p := range projectors {
		led += int(ofA[p])
	}
	require.Equal(t, 3, led, "node-a started first and leads everything")

	// Sample continuously from before the signal until node-b leads everything.
	type sample struct {
		at   time.Time
		sums map[string]float64
	}
	var samples []sample
	for i := 0; ; i++ {
		if i == 20 {
			sent = time.Now()
			require.NoError(t, a.cmd.Process.Signal(syscall.SIGTERM))
		}
		sums, _, err := leaderSums()
		require.NoError(t, err)
		samples = append(samples, sample{time.Now(), sums})
		if !sent.IsZero() && a.exitedNow() && allOnB() {
			break
		}
		require.Less(t, i, 100000, "handover never completed")
	}
	require.NoError(t, a.wait(t, 10*time.Second))
	after, zeros := 0, 0
	for _, s := range samples {
		for _, p := range projectors {
			require.LessOrEqual(t, s.sums[p], 1.0, "two leaders of %s in one sample", p)
			if s.sums[p] == 0 {
				zeros++
			}
		}
		if s.at.After(sent) {
			after++
		}
	}
	t.Logf("node-a led %d of 3 projectors; %d samples, %d after SIGTERM: none with two leaders, %d projector-samples with none (mid-handover)",
		led, len(samples), after, zeros)
}

func TestLagRisesAndReturnsToZero(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	_, base := ob.replica(t, "node-a", `  - name: slow
    batch_size: 10
    sink: {sql: {handlers: {A: "INSERT INTO applied SELECT 'slow', @position FROM pg_sleep(0.002)"}}}
`)
	metric := func(name string) float64 {
		m, err := scrape(base)
		if err != nil {
			return -1
		}
		v, ok := m[name+`{projector="slow"}`]
		if !ok {
			return -1
		}
		return v
	}
	waitFor(t, 30*time.Second, func() bool { return metric("projectord_projector_leader") == 1 })
	ob.insert(t, 3000)
	var maxEvents, maxSeconds float64
	waitFor(t, 30*time.Second, func() bool {
		e, s := metric("projectord_projector_lag_events"), metric("projectord_projector_lag_seconds")
		maxEvents, maxSeconds = max(maxEvents, e), max(maxSeconds, s)
		return maxEvents > 100 && maxSeconds > 0.2
	})
	waitFor(t, 60*time.Second, func() bool {
		return metric("projectord_projector_lag_events") == 0 && metric("projectord_projector_lag_seconds") == 0
	})
	m, err := scrape(base)
	require.NoError(t, err)
	require.Equal(t, 3000.0, m[`projectord_events_processed_total{projector="slow"}`])
	// A lone projector's batches never share a transaction: each of its
	// 300 or more commits is one alone.
	require.GreaterOrEqual(t, m[`projectord_commit_transactions_total{mode="single"}`], 300.0)
	require.Contains(t, m, `projectord_commit_transactions_total{mode="grouped"}`)
	require.Zero(t, m[`projectord_commit_transactions_total{mode="grouped"}`])
	require.Greater(t, m[`projectord_source_head_position`], 0.0)
	require.Equal(t, m[`projectord_source_head_position`], m[`projectord_projector_checkpoint_position{projector="slow"}`])
	t.Logf("lag peaked at %.0f events / %.2fs and returned to 0", maxEvents, maxSeconds)
}

func TestStatusMatchesDatabase(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 120)
	p, base := ob.replica(t, "node-s", sinkYAML("one", "two"))
	waitFor(t, 30*time.Second, func() bool {
		var n int
		return ob.pool.QueryRow(ob.ctx, `SELECT count(*) FROM projectord.checkpoints WHERE events_applied = 120`).Scan(&n) == nil && n == 2
	})
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.wait(t, 10*time.Second))
	_ = base
	ob.insert(t, 7) // now both lag by 7 events

	f := writeFile(t, "s.yaml", fmt.Sprintf("database: {url: '%s'}\nprojectors:\n%s", ob.url, sinkYAML("one", "two")))
	snap := statusJSON(t, f)
	require.Len(t, snap.Projectors, 2)
	var head int64
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT global_position FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&head))
	require.Equal(t, head, snap.Head.Position)
	for _, ps := range snap.Projectors {
		var pos, applied int64
		var node, status string
		require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT last_position, events_applied, leader_node, status FROM projectord.checkpoints WHERE projector = $1`, ps.Name).
			Scan(&pos, &applied, &node, &status))
		require.Equal(t, pos, ps.Checkpoint.Cursor.Position)
		require.Equal(t, applied, ps.EventsApplied)
		require.Equal(t, node, ps.Checkpoint.LeaderNode, "the last claim, as recorded")
		require.Nil(t, ps.Leader, "node-s stopped: nobody holds the lock")
		require.Equal(t, "no leader", ps.State)
		require.Equal(t, status, *ps.RecordedStatus)
		require.Equal(t, int64(7), ps.LagEvents)
		require.Greater(t, ps.LagSeconds, 0.0)
	}
	code, table, _ := cli(t, "status", "--config", f)
	require.Equal(t, exitOK, code)
	require.Contains(t, table, "PROJECTOR")
	require.Regexp(t, `one\s+-\s+-\s+\d+/\d+\s+\d+/\d+\s+7\s`, table)
}

func TestReadyzFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	// A cluster of its own, so stopping it disturbs no other test.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{})
	require.NoError(t, err)
	defer cluster.Close()
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	require.NoError(t, err)
	defer pool.Close()
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `CREATE TABLE applied (projector text NOT NULL, position bigint NOT NULL)`)
	require.NoError(t, err)
	ob := &obsBundle{ctx: ctx, url: cluster.URL("postgres"), pool: pool}
	_, base := ob.replica(t, "node-r", sinkYAML("r"))
	waitFor(t, 30*time.Second, func() bool { code, _ := get(base + "/readyz"); return code == 200 })
	pool.Reset()

	require.NoError(t, cluster.Stop(ctx))
	waitFor(t, 30*time.Second, func() bool { code, _ := get(base + "/readyz"); return code == 503 })
	code, body := get(base + "/readyz?verbose")
	require.Equal(t, 503, code)
	require.Contains(t, body, "[-]database failed")
	code, _ = get(base + "/livez")
	require.Equal(t, 200, code, "liveness never depends on the database")

	require.NoError(t, cluster.Start(ctx))
	waitFor(t, 60*time.Second, func() bool { code, _ := get(base + "/readyz"); return code == 200 })
	code, _ = get(base + "/livez")
	require.Equal(t, 200, code)
	ob.insert(t, 5)
	waitFor(t, 30*time.Second, func() bool {
		var n int
		return ob.pool.QueryRow(ob.ctx, `SELECT count(*) FROM applied`).Scan(&n) == nil && n == 5
	})
}
