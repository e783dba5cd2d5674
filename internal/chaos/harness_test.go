package chaos

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/netproxy"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgcluster"
	"github.com/projectord/projectord/internal/testsupport"
)

// Timing of the replicas under test: short enough for tests, in the same
// proportions as the defaults.
const (
	leaseTimeout = 3 * time.Second
	heartbeat    = 300 * time.Millisecond
)

var projectors = []string{"p1", "p2"}

// env is one scenario's world: its own PostgreSQL (so faults touch nothing
// else), three replicas each behind its own TCP proxy, a writer, and a
// sampler of every replica's metrics.
type env struct {
	t        *testing.T
	ctx      context.Context
	cluster  *pgcluster.Cluster
	pool     *pgxpool.Pool
	replicas map[string]*replica

	writerStop chan struct{}
	writerDone chan struct{}
	written    int64

	samplerStop chan struct{}
	samplerDone chan struct{}
	mu          sync.Mutex
	samples     int
	violations  []string
}

type replica struct {
	node  string
	proxy *netproxy.Proxy
	port  int
	cfg   string
	cmd   *exec.Cmd
	out   *bytes.Buffer
	outMu *sync.Mutex
	done  chan struct{}
	err   error
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := t.Context()
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(cctx, pgcluster.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Close() })
	pool, err := pgxpool.New(ctx, cluster.URL("postgres"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `CREATE TABLE applied (projector text NOT NULL, position bigint NOT NULL, node text NOT NULL)`)
	require.NoError(t, err)
	e := &env{t: t, ctx: ctx, cluster: cluster, pool: pool, replicas: map[string]*replica{}}
	for i := 1; i <= 3; i++ {
		e.addReplica(fmt.Sprintf("node-%d", i))
	}
	for _, r := range e.replicas {
		e.start(r)
	}
	for _, r := range e.replicas {
		e.waitReady(r)
	}
	e.startWriter()
	e.startSampler()
	t.Cleanup(func() {
		for _, r := range e.replicas {
			if r.cmd != nil && !r.exited() {
				_ = r.cmd.Process.Signal(syscall.SIGCONT)
				_ = r.cmd.Process.Kill()
				<-r.done
			}
			if t.Failed() {
				r.outMu.Lock()
				t.Logf("=== output of %s ===\n%s", r.node, lastLines(r.out.String(), 60))
				r.outMu.Unlock()
			}
		}
	})
	return e
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *env) addReplica(node string) {
	t := e.t
	r := &replica{node: node, proxy: netproxy.New(t, fmt.Sprintf("127.0.0.1:%d", e.cluster.Port()))}
	r.port = testsupport.Port(t)
	var handlers strings.Builder
	for _, p := range projectors {
		fmt.Fprintf(&handlers, "  - name: %s\n    batch_size: 100\n    sink: {sql: {handlers: {'*': \"INSERT INTO applied VALUES ('%s', @position, '%s')\"}}}\n", p, p, node)
	}
	r.cfg = filepath.Join(t.TempDir(), node+".yaml")
	require.NoError(t, os.WriteFile(r.cfg, []byte(fmt.Sprintf(`
database: {url: 'postgres://postgres@%s/postgres?sslmode=disable', connect_timeout: 2s, query_timeout: 5s}
coordination: {node_id: %s, heartbeat_interval: %s, lease_timeout: %s, tcp_user_timeout: 2s}
source: {poll_interval: 20ms}
metrics: {refresh_interval: 200ms}
http: {listen: "127.0.0.1:%d"}
shutdown_timeout: 5s
projectors:
%s`, r.proxy.Addr(), node, heartbeat, leaseTimeout, r.port, handlers.String())), 0o600))
	e.replicas[node] = r
}

func (e *env) start(r *replica) {
	r.cmd = exec.Command(binary, "run", "--config", r.cfg)
	r.out, r.outMu = &bytes.Buffer{}, &sync.Mutex{}
	w := lockedWriter{r.out, r.outMu}
	r.cmd.Stdout, r.cmd.Stderr = w, w
	require.NoError(e.t, r.cmd.Start())
	r.done = make(chan struct{})
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (r *replica) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *replica) base() string { return fmt.Sprintf("http://127.0.0.1:%d", r.port) }

// waitReady waits for r to answer ready on its port, failing at once if r
// exited (a replica that could not bind its port must not pass through
// another process answering there).
func (e *env) waitReady(r *replica) {
	waitFor(e.t, 30*time.Second, func() bool {
		if r.exited() {
			r.outMu.Lock()
			defer r.outMu.Unlock()
			e.t.Fatalf("%s exited while starting: %v\n%s", r.node, r.err, lastLines(r.out.String(), 20))
		}
		code, _ := get(r.base()+"/readyz", time.Second)
		return code == 200
	})
}

func get(url string, timeout time.Duration) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
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

// startWriter appends events continuously in small transactions, retrying
// through outages, until the scenario ends.
func (e *env) startWriter() {
	e.writerStop, e.writerDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.writerDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-e.writerStop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
			_, err := e.pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
				SELECT 'w-' || $1::int || '-' || g, 1, 'A', '{}' FROM generate_series(1, 10) g`, i)
			cancel()
			if err == nil {
				e.mu.Lock()
				e.written += 10
				e.mu.Unlock()
			}
		}
	}()
}

// startSampler scrapes every replica at once, repeatedly, and records any
// sample in which two replicas report leading one projector. A replica
// that does not answer (killed, frozen) exports nothing, as for Prometheus.
func (e *env) startSampler() {
	e.samplerStop, e.samplerDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.samplerDone)
		for {
			select {
			case <-e.samplerStop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			leaders := map[string][]string{}
			for _, r := range e.replicas {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, body := get(r.base()+"/metrics", 300*time.Millisecond)
					if code != 200 {
						return
					}
					for _, p := range projectors {
						if metricValue(body, `projectord_projector_leader{projector="`+p+`"}`) == 1 {
							mu.Lock()
							leaders[p] = append(leaders[p], r.node)
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			e.mu.Lock()
			e.samples++
			for p, ns := range leaders {
				if len(ns) > 1 {
					e.violations = append(e.violations, fmt.Sprintf("%s led by %v in one sample", p, ns))
				}
			}
			e.mu.Unlock()
		}
	}()
}

func metricValue(body, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			v, _ := strconv.ParseFloat(strings.TrimPrefix(line, series+" "), 64)
			return v
		}
	}
	return -1
}

// settle lets the system run in steady state for a while: writes flowing,
// projectors following, the sampler sampling.
func (e *env) settle() {
	e.mu.Lock()
	written, samples := e.written, e.samples
	e.mu.Unlock()
	waitFor(e.t, 30*time.Second, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.written >= written+300 && e.samples >= samples+20
	})
}

// leader returns the node recorded as the projector's leader.
func (e *env) leader(p string) string {
	var node string
	_ = e.pool.QueryRow(e.ctx, `SELECT coalesce(leader_node, '') FROM projectord.checkpoints WHERE projector = $1`, p).Scan(&node)
	return node
}

func (e *env) waitLeader(p string) string {
	e.settle()
	var node string
	waitFor(e.t, 30*time.Second, func() bool {
		node = e.leader(p)
		if node == "" {
			return false
		}
		var applied bool
		_ = e.pool.QueryRow(e.ctx, `SELECT EXISTS (SELECT 1 FROM applied WHERE projector = $1 AND node = $2)`, p, node).Scan(&applied)
		return applied
	})
	return node
}

// maxApplied is the newest position of p applied so far.
func (e *env) maxApplied(p string) int64 {
	var pos int64
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT coalesce(max(position), 0) FROM applied WHERE projector = $1`, p).Scan(&pos))
	return pos
}

// measureFailover waits until a node other than old commits a batch of p
// past position after, and returns the time since the fault.
func (e *env) measureFailover(scenario, p, old string, after int64, fault time.Time, within time.Duration) time.Duration {
	var took time.Duration
	waitFor(e.t, within, func() bool {
		var ok bool
		err := e.pool.QueryRow(e.ctx, `SELECT EXISTS (SELECT 1 FROM applied WHERE projector = $1 AND node <> $2 AND position > $3)`, p, old, after).Scan(&ok)
		if err == nil && ok {
			took = time.Since(fault)
			return true
		}
		return false
	})
	recordFailover(scenario, took)
	e.t.Logf("%s: %s failed over from %s in %s", scenario, p, old, took.Round(time.Millisecond))
	return took
}

// finish stops the writer and the sampler, waits until every projector has
// applied every committed event, and checks the read model against the
// events table and the leadership samples.
func (e *env) finish() {
	t := e.t
	e.settle()
	close(e.writerStop)
	<-e.writerDone
	var last store.Cursor
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT transaction_id, global_position FROM events ORDER BY 1 DESC, 2 DESC LIMIT 1`).Scan(&last.XID, &last.Position))
	for _, p := range projectors {
		waitFor(t, 60*time.Second, func() bool {
			var c store.Cursor
			err := e.pool.QueryRow(e.ctx, `SELECT last_xid, last_position FROM projectord.checkpoints WHERE projector = $1`, p).Scan(&c.XID, &c.Position)
			return err == nil && c == last
		})
		var missing, extra, dup, total int
		require.NoError(t, e.pool.QueryRow(e.ctx, `
			WITH got AS (SELECT position, count(*) AS n FROM applied WHERE projector = $1 GROUP BY position)
			SELECT (SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM got WHERE got.position = e.global_position)),
			       (SELECT count(*) FROM got WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.global_position = got.position)),
			       (SELECT count(*) FROM got WHERE n > 1),
			       (SELECT count(*) FROM events)`, p).Scan(&missing, &extra, &dup, &total))
		require.Zero(t, missing, "%s: events never applied", p)
		require.Zero(t, extra, "%s: applied events that do not exist", p)
		require.Zero(t, dup, "%s: events applied twice", p)
		require.Positive(t, total)
	}
	close(e.samplerStop)
	<-e.samplerDone
	e.mu.Lock()
	defer e.mu.Unlock()
	require.Empty(t, e.violations, "two leaders reported in one metrics sample")
	require.Positive(t, e.samples)
	t.Logf("%d events, all applied exactly once by each projector; %d metrics samples of 3 replicas, none with two leaders", e.written, e.samples)
}

var waitFor = testsupport.WaitFor
