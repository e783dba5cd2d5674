package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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

	"github.com/jackc/pgx/v5"
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

// envOptions shape a scenario's world; the zero value is the failover
// scenarios': two projectors, one steady writer, replicas started together.
type envOptions struct {
	// projectors is how many projectors every replica runs (default 2).
	projectors int
	// gapWriters, if set, is how many writers commit out of order (each
	// holds its transaction open for a random while) and roll back one
	// transaction in ten (gaps in the positions), instead of one steady
	// writer.
	gapWriters int
	// stagger starts the replicas one after another, each once the one
	// before is ready plus this long, as an operator rolling them out does.
	stagger time.Duration
	// specs, if set, are the projectors every replica runs (projectors is
	// then ignored); by default each reads every event and records it in
	// the applied table.
	specs []projectorSpec
	// setup runs before the writers and the replicas start: the read
	// models the specs' handlers write.
	setup []string
	// replicas is how many replicas start (default 3).
	replicas int
}

// projectorSpec is one projector of every replica's configuration.
type projectorSpec struct {
	name string
	// eventTypes and streamPrefix are the projector's filter (nil and ""
	// read everything).
	eventTypes   []string
	streamPrefix string
	// handler is the SQL of its one handler ('*') on the replica node, so a
	// read model can record who applied what.
	handler func(node string) string
	// sink, if set, replaces the SQL sink: the YAML flow mapping of the
	// projector's sink (an HTTP sink), with on_error its YAML flow policy.
	sink, onError string
}

// appliedSpec is the failover scenarios' projector: every event, one row
// in applied per application (no key, so a double apply stays visible).
func appliedSpec(name string) projectorSpec {
	return projectorSpec{name: name, handler: func(node string) string {
		return fmt.Sprintf("INSERT INTO applied VALUES ('%s', @position, '%s')", name, node)
	}}
}

// env is one scenario's world: its own PostgreSQL (so faults touch nothing
// else), three replicas each behind its own TCP proxy, writers, and a
// sampler of every replica's metrics.
type env struct {
	t          *testing.T
	ctx        context.Context
	cluster    *pgcluster.Cluster
	pool       *pgxpool.Pool
	replicas   map[string]*replica
	projectors []string
	specs      []projectorSpec
	// lastStart is when the last replica of the initial set was started.
	lastStart time.Time

	writerStop chan struct{}
	writerDone chan struct{}
	written    int64

	samplerStop chan struct{}
	samplerDone chan struct{}
	mu          sync.Mutex
	samples     int
	violations  []string
	// led is each answering replica's count of led projectors in the
	// latest sample (a replica that did not answer is absent).
	led map[string]int
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
	return newEnvWith(t, envOptions{})
}

func newEnvWith(t *testing.T, o envOptions) *env {
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
	_, err = pool.Exec(ctx, `CREATE INDEX ON applied (projector, position)`)
	require.NoError(t, err)
	for _, q := range o.setup {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	e := &env{t: t, ctx: ctx, cluster: cluster, pool: pool, replicas: map[string]*replica{}, specs: o.specs}
	if e.specs == nil {
		e.specs = []projectorSpec{appliedSpec("p1"), appliedSpec("p2")}
		if o.projectors > 0 {
			e.specs = nil
			for i := 1; i <= o.projectors; i++ {
				e.specs = append(e.specs, appliedSpec(fmt.Sprintf("p%02d", i)))
			}
		}
	}
	for _, s := range e.specs {
		e.projectors = append(e.projectors, s.name)
	}
	replicas := 3
	if o.replicas > 0 {
		replicas = o.replicas
	}
	for i := 1; i <= replicas; i++ {
		e.addReplica(fmt.Sprintf("node-%d", i))
	}
	if o.gapWriters > 0 {
		e.startGapWriters(o.gapWriters)
	} else {
		e.startWriter()
	}
	for i := 1; i <= replicas; i++ {
		r := e.replicas[fmt.Sprintf("node-%d", i)]
		e.lastStart = time.Now()
		e.start(r)
		if o.stagger > 0 {
			e.waitReady(r)
			time.Sleep(o.stagger) // pacing the roll-out, as an operator does: not synchronisation
		}
	}
	for _, r := range e.replicas {
		e.waitReady(r)
	}
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
	for _, s := range e.specs {
		// JSON strings and lists are YAML flow scalars and sequences: no
		// quoting of the handlers' SQL by hand.
		fmt.Fprintf(&handlers, "  - name: %s\n    batch_size: 100\n", s.name)
		if s.eventTypes != nil {
			fmt.Fprintf(&handlers, "    event_types: %s\n", jsonText(t, s.eventTypes))
		}
		if s.streamPrefix != "" {
			fmt.Fprintf(&handlers, "    stream_prefix: %s\n", jsonText(t, s.streamPrefix))
		}
		if s.sink != "" {
			fmt.Fprintf(&handlers, "    sink: %s\n    on_error: %s\n", s.sink, s.onError)
			continue
		}
		fmt.Fprintf(&handlers, "    sink: {sql: {handlers: {'*': %s}}}\n", jsonText(t, s.handler(node)))
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

func jsonText(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
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

// startGapWriters starts n writers whose transactions commit out of order:
// each holds its transaction open for up to 20 ms after writing (so a
// later position often commits first), and one transaction in ten rolls
// back (a gap in the positions). Only committed events count as written.
// Each event has one of gapTypes, and each transaction's streams one of
// gapPrefixes followed by the writer's number, so that filters by type and
// by stream prefix (also "ord-1": writers 1 and 10 and up of "ord-") each
// select a strict subset.
func (e *env) startGapWriters(n int) {
	e.writerStop, e.writerDone = make(chan struct{}), make(chan struct{})
	pc, err := pgxpool.ParseConfig(e.cluster.URL("postgres"))
	require.NoError(e.t, err)
	pc.MaxConns = int32(n + 1)
	pool, err := pgxpool.NewWithConfig(e.ctx, pc)
	require.NoError(e.t, err)
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for i := 0; ; i++ {
				select {
				case <-e.writerStop:
					return
				case <-time.After(time.Duration(40+rng.IntN(40)) * time.Millisecond):
				}
				k := 1 + rng.IntN(3)
				types := make([]string, k)
				for j := range types {
					types[j] = gapTypes[rng.IntN(len(gapTypes))]
				}
				prefix := gapPrefixes[rng.IntN(len(gapPrefixes))]
				hold := time.Duration(rng.IntN(20)) * time.Millisecond
				rollback := rng.IntN(10) == 0
				ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
						SELECT $4::text || $1::int || '-' || $2::int || '-' || g, 1, t, '{}' FROM unnest($3::text[]) WITH ORDINALITY AS u(t, g)`,
						w, i, types, prefix); err != nil {
						return err
					}
					time.Sleep(hold) // holding the transaction open is the point: commits out of order
					if rollback {
						return errRollback
					}
					return nil
				})
				cancel()
				if err == nil {
					e.mu.Lock()
					e.written += int64(k)
					e.mu.Unlock()
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		pool.Close()
		close(e.writerDone)
	}()
}

var errRollback = errors.New("rolled back on purpose")

var (
	gapTypes    = []string{"A", "B", "C", "D"}
	gapPrefixes = []string{"ord-", "cus-"}
)

// startSampler scrapes every replica at once, repeatedly, and records any
// sample in which two replicas report leading one projector, and how many
// each leads. A replica that does not answer (killed, frozen) exports
// nothing, as for Prometheus. Only the leader gauge is asked for
// (Prometheus' name[] filter): with 30 projectors the whole exposition
// would cost the replicas more than what is tested.
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
			led := map[string]int{}
			for _, r := range e.replicas {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, body := get(r.base()+"/metrics?name[]=projectord_projector_leader", 300*time.Millisecond)
					if code != 200 {
						return
					}
					mu.Lock()
					defer mu.Unlock()
					led[r.node] = 0
					for _, p := range e.projectors {
						if metricValue(body, `projectord_projector_leader{projector="`+p+`"}`) == 1 {
							leaders[p] = append(leaders[p], r.node)
							led[r.node]++
						}
					}
				}()
			}
			wg.Wait()
			e.mu.Lock()
			e.samples++
			e.led = led
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
	for _, p := range e.projectors {
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
	samples := e.checkSamples()
	t.Logf("%d events, all applied exactly once by each of %d projectors; %d metrics samples of 3 replicas, none with two leaders",
		e.written, len(e.projectors), samples)
}

// checkSamples stops the sampler and checks that no sample showed two
// leaders of one projector; it returns how many samples there were.
func (e *env) checkSamples() int {
	close(e.samplerStop)
	<-e.samplerDone
	e.mu.Lock()
	defer e.mu.Unlock()
	require.Empty(e.t, e.violations, "two leaders reported in one metrics sample")
	require.Positive(e.t, e.samples)
	return e.samples
}

// epochs is the sum of every projector's epoch: each claim (a leader
// taking over, by hand-over or failover) adds one, so its growth counts
// the handovers.
func (e *env) epochs() int64 {
	var n int64
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT coalesce(sum(epoch), 0)::int8 FROM projectord.checkpoints`).Scan(&n))
	return n
}

// ledNow returns the latest sample's count of led projectors by replica.
func (e *env) ledNow() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.led))
	for n, c := range e.led {
		out[n] = c
	}
	return out
}

// waitShares waits, for at most within after since, until one sample
// shows each replica of want leading want's count ±1, every other replica
// that answers leading none, and every projector led. It returns how long
// after since that was.
func (e *env) waitShares(what string, since time.Time, within time.Duration, want map[string]int) time.Duration {
	e.t.Helper()
	var took time.Duration
	var last map[string]int
	defer func() {
		if e.t.Failed() {
			e.t.Logf("%s: wanted %v ±1, last sample %v", what, want, last)
		}
	}()
	testsupport.Until(e.t, what, within-time.Since(since), func() bool {
		led := e.ledNow()
		last = led
		total := 0
		for n, c := range led {
			total += c
			if w, ok := want[n]; ok && (c < w-1 || c > w+1) {
				return false
			}
			if _, ok := want[n]; !ok && c != 0 {
				return false
			}
		}
		for n := range want {
			if _, ok := led[n]; !ok {
				return false
			}
		}
		if total != len(e.projectors) {
			return false
		}
		took = time.Since(since)
		return true
	})
	return took
}

// settle waits until no leadership has moved for quiet, and returns the
// epochs then; a cluster that keeps moving fails within.
func (e *env) settleMoves(quiet, within time.Duration) int64 {
	e.t.Helper()
	last, at := e.epochs(), time.Now()
	testsupport.Until(e.t, fmt.Sprintf("no leadership moving for %s", quiet), within, func() bool {
		if n := e.epochs(); n != last {
			last, at = n, time.Now()
		}
		return time.Since(at) >= quiet
	})
	return last
}

var waitFor = testsupport.WaitFor
