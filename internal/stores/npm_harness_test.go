package stores

// The harness of the tests that write through the event stores' own npm
// packages (emmett_test.go, messagedb_test.go): Node and the packages, a
// PostgreSQL of each test's own, the projectord binary, replicas as
// processes, the writer scripts of internal/stores/node. Identifiers are
// prefixed npm: the package directory is shared with other stores' tests.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/projectord/projectord/internal/store/pgcluster"
	"github.com/projectord/projectord/internal/testsupport"
)

// Timing of the replicas under test: short enough for tests, in the same
// proportions as the defaults (as internal/chaos).
const (
	npmLeaseTimeout = 3 * time.Second
	npmHeartbeat    = 300 * time.Millisecond
	// npmProjector is the one projector every replica runs.
	npmProjector = "read_model"
	// npmServerTimeZone is the cluster's TimeZone: not UTC, so a
	// timestamp read in the session's zone instead of as UTC is off by
	// hours, not by nothing.
	npmServerTimeZone = "America/New_York"
)

// npmRequireNode returns the absolute path of internal/stores/node, whose
// node_modules hold the stores' packages (`make node-deps`). Without node
// or node_modules the test is skipped, unless the run is CI's: make test
// installs node_modules, so missing ones there are a broken step.
func npmRequireNode(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("node")
	require.NoError(t, err)
	var missing string
	if _, err := exec.LookPath("node"); err != nil {
		missing = "node is not on PATH"
	} else {
		for _, f := range []string{
			"node_modules/.package-lock.json",
			"node_modules/@event-driven-io/emmett-postgresql/package.json",
			"node_modules/@eventide/message-db/database/install.sh",
		} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				missing = fmt.Sprintf("%s is missing: run `make node-deps` (npm ci in internal/stores/node)", filepath.Join("internal/stores/node", f))
				break
			}
		}
	}
	if missing == "" {
		return dir
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; make test installs the stores' packages before the tests", missing)
	}
	t.Skipf("%s; the emmett and messagedb tests need Node and the stores' npm packages", missing)
	return ""
}

// npmEnv is one test's world: its own PostgreSQL (a store's install
// creates roles, which are cluster-wide), the binary, the replicas.
type npmEnv struct {
	t        *testing.T
	ctx      context.Context
	cluster  *pgcluster.Cluster
	nodeDir  string
	binary   string
	replicas []*npmReplica

	samplerStop chan struct{}
	samplerDone chan struct{}
	mu          sync.Mutex
	samples     int
	violations  []string
}

func npmNewEnv(t *testing.T) *npmEnv {
	t.Helper()
	e := &npmEnv{t: t, ctx: t.Context(), nodeDir: npmRequireNode(t)}
	cctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(cctx, pgcluster.Options{Settings: map[string]string{"timezone": npmServerTimeZone}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Close() })
	e.cluster = cluster

	// Built per test rather than in a TestMain: the package is shared, and
	// the build cache makes the second build a link.
	e.binary = filepath.Join(t.TempDir(), "projectord")
	build := exec.CommandContext(e.ctx, "go", "build", "-o", e.binary, "../../cmd/projectord")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "building projectord:\n%s", out)

	t.Cleanup(func() {
		for _, r := range e.replicas {
			if r.cmd != nil && !r.exited() {
				_ = r.cmd.Process.Kill()
				<-r.done
			}
			if t.Failed() {
				t.Logf("=== output of %s ===\n%s", r.node, r.output(60))
			}
		}
	})
	return e
}

// url is a connection URL for role on database db of the test's cluster.
// Every role connects without a password (the cluster trusts loopback).
func (e *npmEnv) url(role, db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", role, e.cluster.Port(), db)
}

func (e *npmEnv) pool(role, db string) *pgxpool.Pool {
	p, err := pgxpool.New(e.ctx, e.url(role, db))
	require.NoError(e.t, err)
	e.t.Cleanup(p.Close)
	return p
}

// exec runs statements on a pool, failing the test on the first error.
func (e *npmEnv) exec(p *pgxpool.Pool, stmts ...string) {
	e.t.Helper()
	for _, s := range stmts {
		_, err := p.Exec(e.ctx, s)
		require.NoError(e.t, err, "%s", s)
	}
}

// npmReadModelSQL is the read model every replica inserts into, one row
// per applied event with everything the event carried. No key on uid: an
// event applied twice must show up as a second row, not as an error the
// projector would retry past.
const npmReadModelSQL = `CREATE TABLE public.applied (
	uid             text NOT NULL,
	global_position bigint NOT NULL,
	stream_id       text NOT NULL,
	stream_version  bigint NOT NULL,
	event_type      text NOT NULL,
	event_id        text,
	data            jsonb,
	metadata        jsonb,
	created_at      timestamptz NOT NULL,
	node            text NOT NULL,
	applied_at      timestamptz NOT NULL DEFAULT clock_timestamp()
)`

// npmProjectordRole creates the role the replicas run as, with only what
// README says projectord needs on a store's database: CONNECT, CREATE
// (projectord migrate creates schema projectord), SELECT on the events
// table and USAGE on its schema, INSERT on its read model. grants are the
// store's part.
func (e *npmEnv) npmProjectordRole(admin *pgxpool.Pool, db string, grants ...string) {
	e.exec(admin, append([]string{
		`CREATE ROLE projectord LOGIN`,
		fmt.Sprintf(`GRANT CONNECT, CREATE ON DATABASE %s TO projectord`, db),
		npmReadModelSQL,
		`GRANT SELECT, INSERT ON public.applied TO projectord`,
	}, grants...)...)
}

// config writes a replica's configuration for preset, connecting as url.
// The handler inserts the node's name, so the read model says who applied
// what.
func (e *npmEnv) config(node, url, preset string, port int) string {
	handler := fmt.Sprintf(`INSERT INTO public.applied (uid, global_position, stream_id, stream_version, event_type, event_id, data, metadata, created_at, node)
	VALUES (@data->>'uid', @position, @stream_id, @stream_version, @event_type, @event_id, @data, @metadata, @created_at, '%s')`, node)
	path := filepath.Join(e.t.TempDir(), node+".yaml")
	require.NoError(e.t, os.WriteFile(path, []byte(fmt.Sprintf(`
database: {url: '%s', connect_timeout: 2s, query_timeout: 5s}
coordination: {node_id: %s, acquire_interval: 200ms, heartbeat_interval: %s, lease_timeout: %s, tcp_user_timeout: 2s}
source: {preset: %s, poll_interval: 20ms}
metrics: {refresh_interval: 200ms}
http: {listen: "127.0.0.1:%d"}
shutdown_timeout: 5s
projectors:
  - name: %s
    batch_size: 100
    sink: {sql: {handlers: {'*': %q}}}
`, url, node, npmHeartbeat, npmLeaseTimeout, preset, port, npmProjector, handler)), 0o600))
	return path
}

// cli runs the projectord binary to its end and returns its exit code and
// output.
func (e *npmEnv) cli(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.binary, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), out.String(), errOut.String()
	}
	require.NoError(e.t, err, "projectord %v", args)
	return 0, out.String(), errOut.String()
}

// node runs a script of internal/stores/node to its end, failing the test
// unless it exits 0, and returns the JSON line it reported.
func (e *npmEnv) node(into any, script string, args ...string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{script}, args...)...)
	cmd.Dir = e.nodeDir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(e.t, cmd.Run(), "node %s %v:\n%s%s", script, args, out.String(), errOut.String())
	npmDecodeReport(e.t, out.String(), into)
}

// npmDecodeReport decodes the last line of a script's output, its report.
func npmDecodeReport(t *testing.T, out string, into any) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), into), "the script's report:\n%s", out)
}

// npmWriter is a writer script running concurrently with the replicas.
type npmWriter struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	writing chan struct{} // closed when the script printed "writing"
	done    chan struct{}
	err     error
	mu      sync.Mutex
	out     strings.Builder
	errOut  bytes.Buffer
}

// startWriter starts script with args; see Gate in writer-args.mjs for
// --mark-at and --hold-at.
func (e *npmEnv) startWriter(script string, args ...string) *npmWriter {
	t := e.t
	w := &npmWriter{t: t, writing: make(chan struct{}), done: make(chan struct{})}
	w.cmd = exec.CommandContext(e.ctx, "node", append([]string{script}, args...)...)
	w.cmd.Dir = e.nodeDir
	w.cmd.Stderr = &w.errOut
	var err error
	w.stdin, err = w.cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := w.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, w.cmd.Start())
	go func() {
		sc := bufio.NewScanner(stdout)
		marked := false
		for sc.Scan() {
			w.mu.Lock()
			w.out.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
			if sc.Text() == "writing" && !marked {
				marked = true
				close(w.writing)
			}
		}
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		if !w.exited() {
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	return w
}

func (w *npmWriter) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// waitWriting waits until every writer has written its first share.
func (w *npmWriter) waitWriting(within time.Duration) {
	w.t.Helper()
	select {
	case <-w.writing:
	case <-w.done:
		w.t.Fatalf("the writer ended before writing its first share: %v\n%s%s", w.err, w.output(), w.errOut.String())
	case <-time.After(within):
		w.t.Fatalf("the writers did not write their first share within %s:\n%s", within, w.output())
	}
}

// release lets the writers past their hold.
func (w *npmWriter) release() {
	_, err := io.WriteString(w.stdin, "go\n")
	require.NoError(w.t, err)
	require.NoError(w.t, w.stdin.Close())
}

// wait waits for the writer to exit 0 and decodes its report.
func (w *npmWriter) wait(within time.Duration, into any) {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(within):
		w.t.Fatalf("the writer did not finish within %s:\n%s", within, w.output())
	}
	require.NoError(w.t, w.err, "the writer failed:\n%s%s", w.output(), w.errOut.String())
	npmDecodeReport(w.t, w.output(), into)
}

func (w *npmWriter) output() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.out.String()
}

// npmReplica is one projectord run process.
type npmReplica struct {
	node  string
	cfg   string
	port  int
	cmd   *exec.Cmd
	outMu sync.Mutex
	out   bytes.Buffer
	done  chan struct{}
	err   error
}

func (e *npmEnv) addReplica(node, url, preset string) *npmReplica {
	r := &npmReplica{node: node, port: testsupport.Port(e.t)}
	r.cfg = e.config(node, url, preset, r.port)
	e.replicas = append(e.replicas, r)
	return r
}

func (r *npmReplica) Write(p []byte) (int, error) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	return r.out.Write(p)
}

func (r *npmReplica) output(n int) string {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	lines := strings.Split(r.out.String(), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// start starts r and waits until it answers ready, failing at once if it
// exits meanwhile.
func (e *npmEnv) start(r *npmReplica) {
	e.t.Helper()
	r.cmd = exec.Command(e.binary, "run", "--config", r.cfg)
	r.cmd.Stdout, r.cmd.Stderr = r, r
	require.NoError(e.t, r.cmd.Start())
	r.done = make(chan struct{})
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	testsupport.Until(e.t, r.node+" ready", 30*time.Second, func() bool {
		if r.exited() {
			e.t.Fatalf("%s exited while starting: %v\n%s", r.node, r.err, r.output(20))
		}
		code, _ := npmGet(r.base()+"/readyz", time.Second)
		return code == http.StatusOK
	})
}

// kill kills r with SIGKILL and waits for it to be gone.
func (e *npmEnv) kill(r *npmReplica) {
	e.t.Helper()
	require.False(e.t, r.exited(), "%s had already exited: %v", r.node, r.err)
	require.NoError(e.t, r.cmd.Process.Signal(syscall.SIGKILL))
	<-r.done
}

func (r *npmReplica) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *npmReplica) base() string { return "http://127.0.0.1:" + strconv.Itoa(r.port) }

func npmGet(url string, timeout time.Duration) (int, string) {
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

// npmLeading reports whether the metrics say the projector is led here.
func npmLeading(body string) bool {
	series := `projectord_projector_leader{projector="` + npmProjector + `"} `
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && f == 1
		}
	}
	return false
}

// startSampler scrapes every running replica at once, repeatedly, and
// records any sample in which both report leading the projector.
func (e *npmEnv) startSampler() {
	e.samplerStop, e.samplerDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.samplerDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-e.samplerStop:
				return
			case <-tick.C:
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			var leaders []string
			for _, r := range e.replicas {
				wg.Add(1)
				go func() {
					defer wg.Done()
					code, body := npmGet(r.base()+"/metrics", 300*time.Millisecond)
					if code == http.StatusOK && npmLeading(body) {
						mu.Lock()
						leaders = append(leaders, r.node)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			e.mu.Lock()
			e.samples++
			if len(leaders) > 1 {
				e.violations = append(e.violations, fmt.Sprintf("%v in one sample", leaders))
			}
			e.mu.Unlock()
		}
	}()
}

// stopSampler stops the sampler and asserts it sampled and saw no two
// leaders at once.
func (e *npmEnv) stopSampler() int {
	close(e.samplerStop)
	<-e.samplerDone
	e.mu.Lock()
	defer e.mu.Unlock()
	require.Empty(e.t, e.violations, "two replicas reported leading %s", npmProjector)
	require.Positive(e.t, e.samples)
	return e.samples
}

// leader is the replica that leads the projector and has applied events
// (recorded leader_node, and rows of its own in the read model).
func (e *npmEnv) leader(p *pgxpool.Pool) *npmReplica {
	e.t.Helper()
	var node string
	testsupport.Until(e.t, "a leader applying events", 30*time.Second, func() bool {
		err := p.QueryRow(e.ctx, `SELECT c.leader_node FROM projectord.checkpoints c
			WHERE c.projector = $1 AND EXISTS (SELECT 1 FROM public.applied a WHERE a.node = c.leader_node)`, npmProjector).Scan(&node)
		return err == nil
	})
	for _, r := range e.replicas {
		if r.node == node {
			return r
		}
	}
	e.t.Fatalf("leader %q is none of the replicas", node)
	return nil
}

// npmFailover runs the scenario both stores share, with the writers
// started by startWriters (held at their gate) and the replicas started:
// once every writer is under way, kill -9 the leader, let the writers go
// on, wait until the other replica applies what the writers write next,
// and start the killed one again.
func (e *npmEnv) npmFailover(p *pgxpool.Pool, w *npmWriter) {
	t := e.t
	w.waitWriting(60 * time.Second)
	old := e.leader(p)
	var before int64
	require.NoError(t, p.QueryRow(e.ctx, `SELECT coalesce(max(global_position), 0) FROM public.applied`).Scan(&before))
	killed := time.Now()
	e.kill(old)
	require.False(t, w.exited(), "the writers ended before the leader was killed")
	w.release()
	testsupport.Until(t, "another replica applying events written after the kill", 30*time.Second, func() bool {
		var ok bool
		err := p.QueryRow(e.ctx, `SELECT EXISTS (SELECT 1 FROM public.applied WHERE node <> $1 AND global_position > $2)`, old.node, before).Scan(&ok)
		return err == nil && ok
	})
	t.Logf("killed leader %s (-9) mid-run; another replica applied past position %d %s later", old.node, before, time.Since(killed).Round(time.Millisecond))
	e.start(old)
}

// npmCaughtUp waits until the projector's checkpoint is the newest cursor
// of the oracle's rows (cursorSQL: the transaction id and position of the
// last event the store's readers read).
func (e *npmEnv) npmCaughtUp(p *pgxpool.Pool, cursorSQL string) {
	e.t.Helper()
	var xid uint64
	var pos int64
	require.NoError(e.t, p.QueryRow(e.ctx, cursorSQL).Scan(&xid, &pos))
	testsupport.Until(e.t, fmt.Sprintf("checkpoint at (%d, %d)", xid, pos), 60*time.Second, func() bool {
		var x uint64
		var q int64
		err := p.QueryRow(e.ctx, `SELECT last_xid, last_position FROM projectord.checkpoints WHERE projector = $1`, npmProjector).Scan(&x, &q)
		return err == nil && x == xid && q == pos
	})
}

// npmVerdict compares the read model with the oracle: oracleSQL selects,
// from the store's own rows by the store's own reader rules, what each
// event must have reached the read model with (uid, global_position,
// stream_id, stream_version, event_type, event_id, data, metadata,
// created_at). Every event exactly once, nothing else, every field as
// the store holds it.
func (e *npmEnv) npmVerdict(p *pgxpool.Pool, oracleSQL string) (total int) {
	t := e.t
	var distinct, missing, extra, twice, differ int
	require.NoError(t, p.QueryRow(e.ctx, `
		WITH o AS (`+oracleSQL+`),
		     got AS (SELECT uid, count(*) AS n FROM public.applied GROUP BY uid)
		SELECT (SELECT count(*) FROM o),
		       (SELECT count(DISTINCT uid) FROM o),
		       (SELECT count(*) FROM o WHERE NOT EXISTS (SELECT 1 FROM got WHERE got.uid = o.uid)),
		       (SELECT count(*) FROM got WHERE NOT EXISTS (SELECT 1 FROM o WHERE o.uid = got.uid)),
		       (SELECT count(*) FROM got WHERE n > 1),
		       (SELECT count(*) FROM o JOIN public.applied a USING (uid)
		         WHERE (a.global_position, a.stream_id, a.stream_version, a.event_type, a.event_id, a.data, a.metadata, a.created_at)
		               IS DISTINCT FROM (o.global_position, o.stream_id, o.stream_version, o.event_type, o.event_id, o.data, o.metadata, o.created_at))`,
	).Scan(&total, &distinct, &missing, &extra, &twice, &differ))
	require.Positive(t, total)
	require.Equal(t, total, distinct, "the writers' uids are not unique: the oracle cannot tell events apart")
	if differ > 0 {
		var sample string
		_ = p.QueryRow(e.ctx, `WITH o AS (`+oracleSQL+`)
			SELECT format('store: %s / read model: %s', row_to_json(o), row_to_json(a)) FROM o JOIN public.applied a USING (uid)
			WHERE (a.global_position, a.stream_id, a.stream_version, a.event_type, a.event_id, a.data, a.metadata, a.created_at)
			      IS DISTINCT FROM (o.global_position, o.stream_id, o.stream_version, o.event_type, o.event_id, o.data, o.metadata, o.created_at)
			LIMIT 1`).Scan(&sample)
		t.Errorf("%d events reached the read model with other values than the store holds, e.g. %s", differ, sample)
	}
	require.Zero(t, missing, "events the store's readers read that never reached the read model")
	require.Zero(t, extra, "read-model rows of no event the store's readers read")
	require.Zero(t, twice, "events applied more than once")
	return total
}

// npmAppliedBy counts the read model's rows by the node that applied them.
func (e *npmEnv) npmAppliedBy(p *pgxpool.Pool) map[string]int {
	rows, err := p.Query(e.ctx, `SELECT node, count(*) FROM public.applied GROUP BY node`)
	require.NoError(e.t, err)
	by := map[string]int{}
	for rows.Next() {
		var node string
		var n int
		require.NoError(e.t, rows.Scan(&node, &n))
		by[node] = n
	}
	require.NoError(e.t, rows.Err())
	return by
}

// npmColumns describes table's columns (name, type, nullability, default)
// in order, to show what `source prepare` changed of a store's table.
func (e *npmEnv) npmColumns(p *pgxpool.Pool, table string) []string {
	e.t.Helper()
	rows, err := p.Query(e.ctx, `SELECT format('%s %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
			CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
			coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''))
		FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, table)
	require.NoError(e.t, err)
	var cols []string
	for rows.Next() {
		var c string
		require.NoError(e.t, rows.Scan(&c))
		cols = append(cols, c)
	}
	require.NoError(e.t, rows.Err())
	require.NotEmpty(e.t, cols, "%s has no columns", table)
	return cols
}
