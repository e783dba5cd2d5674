package stores

// The harness of the Marten, eventcore and Eventuous tests: one
// PostgreSQL cluster per test holding the store's tables as the store's own
// migrations create them, the projectord binary, two replicas of it, and
// writers that append through the store's own SQL while the replicas
// project. Identifiers carry the sqlStore prefix: the package's other
// tests (Emmett, Message DB) keep a harness of their own beside this one.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/pgcluster"
	"github.com/projectord/projectord/internal/testsupport"
)

// Replica timing: short enough for a test, in the proportions of the
// defaults (as the chaos tests use).
const (
	sqlStoreLeaseTimeout = 3 * time.Second
	sqlStoreHeartbeat    = 300 * time.Millisecond
	// sqlStoreWithin bounds every wait of these tests. It is generous
	// because the machine is shared: a bound, never a speed target.
	sqlStoreWithin = 45 * time.Second
)

// sqlStoreReadModel is every projector's target: one row per applied
// event, keyed by nothing but a sequence, so an event applied twice shows
// as two rows. seq is the order of application (one leader commits at a
// time, and a deposed leader's rows roll back).
const sqlStoreReadModel = `CREATE TABLE public.read_model (
    seq            bigserial PRIMARY KEY,
    projector      text NOT NULL,
    event_id       text NOT NULL,
    position       bigint NOT NULL,
    xid            xid8 NOT NULL,
    stream_id      text NOT NULL,
    stream_version bigint NOT NULL,
    event_type     text NOT NULL,
    tenant         text,
    node           text NOT NULL
)`

// sqlStoreProjector is one projector of the replicas' configuration.
type sqlStoreProjector struct {
	Name         string
	StreamPrefix string
}

// sqlStore is one test's world.
type sqlStore struct {
	t       *testing.T
	ctx     context.Context
	cluster *pgcluster.Cluster
	url     string // the store's database, as projectord connects to it
	pool    *pgxpool.Pool
	bin     string
	dir     string
	preset  string

	projectors []sqlStoreProjector
	replicas   map[string]*sqlStoreReplica
}

type sqlStoreReplica struct {
	node string
	port int
	cfg  string
	cmd  *exec.Cmd
	out  *sqlStoreOutput
	done chan struct{}
	err  error
}

// sqlStoreOutput collects a process's output; the process writes it from
// another goroutine.
type sqlStoreOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *sqlStoreOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *sqlStoreOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// sqlStoreStart starts the test's cluster and builds projectord. Nothing
// of projectord exists in the database yet: the store's tables come next,
// created by the test as the store creates them.
func sqlStoreStart(t *testing.T, preset string, projectors ...sqlStoreProjector) *sqlStore {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()

	// The build runs while the cluster starts: both take seconds on a
	// loaded machine, and neither needs the other.
	bin := filepath.Join(dir, "projectord")
	built := make(chan struct{})
	var buildErr error
	go func() {
		defer close(built)
		out, err := exec.Command("go", "build", "-o", bin, "../../cmd/projectord").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building projectord: %v\n%s", err, out)
		}
	}()
	// Even when the cluster fails to start, the build ends before its
	// directory is removed.
	t.Cleanup(func() { <-built })

	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(cctx, pgcluster.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Close() })
	url := cluster.URL("postgres")
	pcfg, err := pgxpool.ParseConfig(url)
	require.NoError(t, err)
	pcfg.MaxConns = 24 // the writers, plus the test's own queries
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	<-built
	require.NoError(t, buildErr)

	s := &sqlStore{t: t, ctx: ctx, cluster: cluster, url: url, pool: pool, bin: bin, dir: dir,
		preset: preset, projectors: projectors, replicas: map[string]*sqlStoreReplica{}}
	s.exec(sqlStoreReadModel)
	t.Cleanup(s.stopAll)
	return s
}

// exec runs sql with args; without args sql may hold several statements,
// run in one implicit transaction as psql -c runs them.
func (s *sqlStore) exec(sql string, args ...any) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	_, err := s.pool.Exec(ctx, sql, args...)
	require.NoError(s.t, err, "%s", sql)
}

// sqlStoreTestdata reads a file of testdata with its placeholders
// replaced (old, new, ...), as the store replaces them before running it.
func sqlStoreTestdata(t *testing.T, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return strings.NewReplacer(replace...).Replace(string(b))
}

// sqlStoreScalar runs a query returning one value.
func sqlStoreScalar[T any](s *sqlStore, sql string, args ...any) T {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	var v T
	require.NoError(s.t, s.pool.QueryRow(ctx, sql, args...).Scan(&v), "%s", sql)
	return v
}

// config writes a replica's configuration; node "cli" is the one the
// commands run with.
func (s *sqlStore) config(node string, port int) string {
	var p strings.Builder
	for _, pr := range s.projectors {
		fmt.Fprintf(&p, "  - name: %s\n    batch_size: 40\n", pr.Name)
		if pr.StreamPrefix != "" {
			fmt.Fprintf(&p, "    stream_prefix: %q\n", pr.StreamPrefix)
		}
		fmt.Fprintf(&p, "    sink: {sql: {handlers: {'*': \"INSERT INTO public.read_model (projector, event_id, position, xid, stream_id, stream_version, event_type, tenant, node) "+
			"VALUES ('%s', @event_id, @position, @transaction_id, @stream_id, @stream_version, @event_type, @metadata->>'tenant_id', '%s')\"}}}\n", pr.Name, node)
	}
	f := filepath.Join(s.dir, node+".yaml")
	require.NoError(s.t, os.WriteFile(f, []byte(fmt.Sprintf(`
database: {url: '%s', connect_timeout: 2s, query_timeout: 5s}
coordination: {node_id: %s, acquire_interval: 200ms, heartbeat_interval: %s, lease_timeout: %s, tcp_user_timeout: 2s}
source: {preset: %s, poll_interval: 20ms}
metrics: {refresh_interval: 200ms}
http: {listen: "127.0.0.1:%d"}
shutdown_timeout: 5s
projectors:
%s`, s.url, node, sqlStoreHeartbeat, sqlStoreLeaseTimeout, s.preset, port, p.String())), 0o600))
	return f
}

// projectord runs one command of the binary to its end and returns its
// combined output and exit code.
func (s *sqlStore) projectord(args ...string) (string, int) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	cfg := s.config("cli", testsupport.Port(s.t))
	cmd := exec.CommandContext(ctx, s.bin, append(args, "--config", cfg)...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		s.t.Fatalf("projectord %v: %v\n%s", args, err, out)
		return "", -1
	}
}

// prepare is the acceptance's sequence: `config validate --check-db`
// refuses the store's table as its migrations left it, telling the
// operator to run `source prepare`; `source prepare --apply` makes it
// readable, and validate then passes.
func (s *sqlStore) prepare() {
	t := s.t
	t.Helper()
	out, code := s.projectord("config", "validate", "--check-db")
	require.Equal(t, 2, code, "config validate --check-db must refuse the unprepared table:\n%s", out)
	require.Contains(t, out, "projectord source prepare", "the refusal must say what to do")
	t.Logf("before prepare, config validate --check-db exits %d: %s", code, sqlStoreLastLine(out))

	out, code = s.projectord("source", "prepare", "--apply")
	require.Equal(t, 0, code, "source prepare --apply:\n%s", out)
	require.Contains(t, out, "-- Applied and verified.")

	out, code = s.projectord("config", "validate", "--check-db")
	require.Equal(t, 0, code, "config validate --check-db after prepare:\n%s", out)
	require.Contains(t, out, "configuration OK")

	// Prepare is idempotent: a second run (an operator re-running it, a
	// deploy script) must change nothing and pass.
	out, code = s.projectord("source", "prepare", "--apply")
	require.Equal(t, 0, code, "source prepare --apply, again:\n%s", out)
}

func sqlStoreLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// startReplica starts (or restarts) the replica node and waits until it
// answers ready.
func (s *sqlStore) startReplica(node string) {
	t := s.t
	t.Helper()
	r := s.replicas[node]
	if r == nil {
		r = &sqlStoreReplica{node: node, port: testsupport.Port(t)}
		r.cfg = s.config(node, r.port)
		s.replicas[node] = r
	}
	r.cmd = exec.Command(s.bin, "run", "--config", r.cfg)
	if r.out == nil { // a restarted replica's output follows its first run's
		r.out = &sqlStoreOutput{}
	}
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	require.NoError(t, r.cmd.Start())
	r.done = make(chan struct{})
	go func() { r.err = r.cmd.Wait(); close(r.done) }()
	testsupport.Until(t, node+" ready", sqlStoreWithin, func() bool {
		select {
		case <-r.done:
			t.Fatalf("%s exited while starting: %v\n%s", node, r.err, r.out.String())
		default:
		}
		return sqlStoreGet(fmt.Sprintf("http://127.0.0.1:%d/readyz", r.port)) == http.StatusOK
	})
}

func sqlStoreGet(url string) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// kill ends the replica's process with SIGKILL: no release, no NOTIFY;
// its coordination session dies with it.
func (s *sqlStore) kill(node string) {
	r := s.replicas[node]
	require.NoError(s.t, r.cmd.Process.Kill())
	<-r.done
}

// stop asks the replica to stop (SIGTERM) and waits for its exit.
func (s *sqlStore) stop(node string) {
	r := s.replicas[node]
	require.NoError(s.t, r.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-r.done:
	case <-time.After(sqlStoreWithin):
		s.t.Fatalf("%s did not stop within %s after SIGTERM", node, sqlStoreWithin)
	}
}

func (s *sqlStore) stopAll() {
	for _, r := range s.replicas {
		if r.cmd == nil || r.done == nil {
			continue
		}
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill()
			<-r.done
		}
		if s.t.Failed() {
			s.t.Logf("=== output of %s ===\n%s", r.node, sqlStoreTail(r.out.String(), 40))
		}
	}
}

func sqlStoreTail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// leader is the node the checkpoint names as the projector's leader.
func (s *sqlStore) leader(projector string) string {
	var node string
	_ = s.pool.QueryRow(s.ctx, `SELECT coalesce(leader_node, '') FROM projectord.checkpoints WHERE projector = $1`, projector).Scan(&node)
	return node
}

// applied counts the read model's rows of projector applied by node ("":
// any node).
func (s *sqlStore) applied(projector, node string) int {
	var n int
	_ = s.pool.QueryRow(s.ctx, `SELECT count(*) FROM public.read_model WHERE projector = $1 AND ($2 = '' OR node = $2)`, projector, node).Scan(&n)
	return n
}

// failover ends the leader of projector once it has applied something,
// with SIGKILL (graceful false: no release, its session dies with it) or
// SIGTERM (a graceful handover), waits until the other replica applies
// events after that, and restarts the one it ended, so two replicas run
// again.
func (s *sqlStore) failover(projector string, graceful bool) {
	t := s.t
	t.Helper()
	var old string
	testsupport.Until(t, projector+" led and applying", sqlStoreWithin, func() bool {
		old = s.leader(projector)
		return old != "" && s.applied(projector, old) > 0
	})
	before := s.applied(projector, "")
	last := sqlStoreScalar[int64](s, `SELECT coalesce(max(seq), 0) FROM public.read_model`)
	how := "killed"
	if graceful {
		how = "stopped"
		s.stop(old)
	} else {
		s.kill(old)
	}
	ended := time.Now()
	// A batch the old leader sent before it ended may still commit: only a
	// row another node applied after that counts.
	testsupport.Until(t, "another replica applying "+projector+" after "+old+" was "+how, sqlStoreWithin, func() bool {
		var ok bool
		_ = s.pool.QueryRow(s.ctx, `SELECT EXISTS (SELECT FROM public.read_model WHERE projector = $1 AND node <> $2 AND seq > $3)`,
			projector, old, last).Scan(&ok)
		return ok
	})
	t.Logf("%s %s, the leader of %s, after %d events applied; %s took over in %s",
		how, old, projector, before, s.leader(projector), time.Since(ended).Round(time.Millisecond))
	s.startReplica(old)
}

// sqlStoreWriters append through the store's own statements from several
// connections at once, holding some transactions open before COMMIT so
// that later positions commit first.
type sqlStoreWriters struct {
	s    *sqlStore
	stop chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	commits     int
	events      int
	rollbacks   int
	conflicts   int
	outOfOrder  int   // commits below a position already committed
	maxPosition int64 // the highest position committed so far
}

// sqlStoreAppend appends one transaction's events through tx (open) for
// writer and returns their positions.
// It returns errSqlStoreConflict when the store refused the append as a
// concurrency conflict, which the store's clients retry.
type sqlStoreAppend func(ctx context.Context, tx pgx.Tx, writer int) ([]int64, error)

var errSqlStoreConflict = errors.New("append conflict")

// startWriters starts n writers calling appendFn until stopped. A quarter
// of the transactions sleep up to 150 ms before COMMIT; one in twenty
// rolls back instead.
func (s *sqlStore) startWriters(n int, appendFn sqlStoreAppend) *sqlStoreWriters {
	w := &sqlStoreWriters{s: s, stop: make(chan struct{})}
	for k := 0; k < n; k++ {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for {
				select {
				case <-w.stop:
					return
				default:
				}
				w.once(k, appendFn)
			}
		}()
	}
	s.t.Cleanup(w.halt)
	return w
}

func (w *sqlStoreWriters) once(writer int, appendFn sqlStoreAppend) {
	ctx, cancel := context.WithTimeout(w.s.ctx, 10*time.Second)
	defer cancel()
	tx, err := w.s.pool.Begin(ctx)
	if err != nil {
		return
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	positions, err := appendFn(ctx, tx, writer)
	if err != nil {
		w.mu.Lock()
		if errors.Is(err, errSqlStoreConflict) {
			w.conflicts++
		} else if ctx.Err() == nil && w.s.ctx.Err() == nil {
			w.s.t.Errorf("writer %d: %v", writer, err)
		}
		w.mu.Unlock()
		return
	}
	roll := sqlStoreRandInt(20) == 0
	if sqlStoreRandInt(4) == 0 {
		if _, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, float64(20+sqlStoreRandInt(130))/1000); err != nil {
			return
		}
	}
	if roll {
		_ = tx.Rollback(ctx)
		w.mu.Lock()
		w.rollbacks++
		w.mu.Unlock()
		return
	}
	// A higher position whose commit had returned before this COMMIT was
	// sent was certainly committed first.
	w.mu.Lock()
	committedBefore := w.maxPosition
	w.mu.Unlock()
	if err := tx.Commit(ctx); err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.commits++
	w.events += len(positions)
	low, high := int64(1<<62), int64(0)
	for _, p := range positions {
		low, high = min(low, p), max(high, p)
	}
	if len(positions) > 0 && low < committedBefore {
		w.outOfOrder++
	}
	w.maxPosition = max(w.maxPosition, high)
}

// waitEvents waits until the writers have committed n events more than
// when called.
func (w *sqlStoreWriters) waitEvents(n int) {
	w.mu.Lock()
	target := w.events + n
	w.mu.Unlock()
	testsupport.Until(w.s.t, fmt.Sprintf("writers committing %d events", n), sqlStoreWithin, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.events >= target
	})
}

func (w *sqlStoreWriters) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
}

// finish stops the writers and checks that the run exercised what it is
// meant to: commits out of position order, and rollbacks.
func (w *sqlStoreWriters) finish() {
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.s.t.Logf("writers: %d transactions committed (%d events), %d rolled back, %d conflicts retried, %d committed below an already committed position",
		w.commits, w.events, w.rollbacks, w.conflicts, w.outOfOrder)
	require.Positive(w.s.t, w.outOfOrder, "no transaction committed after a later position: the delayed commits did not interleave")
	require.Positive(w.s.t, w.rollbacks)
}

// waitCaughtUp waits until projector's checkpoint has reached the newest
// cursor of the rows it reads: rows, an SQL relation over the store with
// columns xid (xid8) and pos (bigint).
func (s *sqlStore) waitCaughtUp(projector, rows string) {
	t := s.t
	t.Helper()
	q := fmt.Sprintf(`SELECT (SELECT (c.last_xid, c.last_position) FROM projectord.checkpoints c WHERE c.projector = $1)
		>= (SELECT (r.xid, r.pos) FROM (%s) r ORDER BY r.xid DESC, r.pos DESC LIMIT 1)`, rows)
	testsupport.Until(t, projector+" caught up", sqlStoreWithin, func() bool {
		var ok *bool
		err := s.pool.QueryRow(s.ctx, q, projector).Scan(&ok)
		return err == nil && ok != nil && *ok
	})
}

// assertOracle checks the read model of projector against oracle, an SQL
// relation with one row per event the projector must apply (column
// event_id, text): nothing missing, nothing twice, nothing else. It
// returns the number of events.
func (s *sqlStore) assertOracle(projector, oracle string) int {
	t := s.t
	t.Helper()
	var missing, extra, twice, total int
	require.NoError(t, s.pool.QueryRow(s.ctx, fmt.Sprintf(`
		WITH want AS (%s),
		     got AS (SELECT event_id, count(*) AS n FROM public.read_model WHERE projector = $1 GROUP BY event_id)
		SELECT (SELECT count(*) FROM want WHERE event_id NOT IN (SELECT event_id FROM got)),
		       (SELECT count(*) FROM got WHERE event_id NOT IN (SELECT event_id FROM want)),
		       (SELECT count(*) FROM got WHERE n > 1),
		       (SELECT count(*) FROM want)`, oracle), projector).Scan(&missing, &extra, &twice, &total))
	require.Zero(t, missing, "%s: events never applied", projector)
	require.Zero(t, extra, "%s: applied events the store's readers would not read", projector)
	require.Zero(t, twice, "%s: events applied twice", projector)
	require.Positive(t, total)
	nodes := sqlStoreScalar[int](s, `SELECT count(DISTINCT node) FROM public.read_model WHERE projector = $1`, projector)
	t.Logf("%s: all %d events applied exactly once, by %d replicas", projector, total, nodes)
	return total
}

// assertStreamOrder checks that projector applied the events of each
// stream (tenant and stream id) in stream_version order, except in the
// streams the SQL condition exempt (over stream_id; "false": none)
// selects, whose inversions it logs and returns.
//
// The reader's order is (transaction_id, position), and a transaction's
// id is assigned at its first write, not at commit: a writer that wrote
// before it serialised on a stream, and then appended after another
// transaction's events of that stream, comes first in that order although
// its events come later in the stream. eventcore (an advisory lock before
// any write) and Marten's quick append (a stream's concurrent appends
// conflict on its unique version index) never do that; Eventuous' racy
// expected-version check with ON CONFLICT DO NOTHING does.
func (s *sqlStore) assertStreamOrder(projector, exempt string) int {
	t := s.t
	t.Helper()
	rows, err := s.pool.Query(s.ctx, fmt.Sprintf(`SELECT seq, tenant, stream_id, stream_version, xid::text, position, node, %s AS exempt FROM (
		SELECT *, stream_version < lag(stream_version) OVER (PARTITION BY tenant, stream_id ORDER BY seq) AS back
		FROM public.read_model WHERE projector = $1) x WHERE back ORDER BY stream_id, seq`, exempt), projector)
	require.NoError(t, err)
	var inverted, exempted int
	for rows.Next() {
		v, err := rows.Values()
		require.NoError(t, err)
		if v[len(v)-1] == true {
			exempted++
		} else {
			inverted++
		}
		t.Logf("%s: applied before an earlier event of its stream (seq, tenant, stream, version, xid, position, node): %v", projector, v[:len(v)-1])
	}
	require.NoError(t, rows.Err())
	require.Zero(t, inverted, "%s: events of a stream applied out of stream order", projector)
	return exempted
}

// sqlStoreRandInt is a uniform int in [0, n).
func sqlStoreRandInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		panic(err)
	}
	return int(v.Int64())
}

// sqlStoreUUID4 is a random (version 4) UUID, as .NET's Guid.NewGuid
// gives (Eventuous' message ids). Marten's event and stream ids are
// CombGuids, ordered by time; nothing here orders by them.
func sqlStoreUUID4() [16]byte {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// sqlStoreV7 generates version 7 UUIDs (RFC 9562) as the uuid crate's
// Uuid::now_v7 does for eventcore: 48 bits of Unix milliseconds, then a
// counter that keeps the ids of one process increasing within a
// millisecond, then random bits.
var sqlStoreV7 struct {
	mu      sync.Mutex
	ms      uint64
	counter uint16
}

func sqlStoreUUID7() [16]byte {
	sqlStoreV7.mu.Lock()
	ms := uint64(time.Now().UnixMilli())
	if ms <= sqlStoreV7.ms {
		ms = sqlStoreV7.ms
		sqlStoreV7.counter++
		if sqlStoreV7.counter == 0x1000 { // the 12-bit counter is spent: borrow the next millisecond
			ms++
			sqlStoreV7.counter = 0
		}
	} else {
		sqlStoreV7.counter = 0
	}
	sqlStoreV7.ms = ms
	counter := sqlStoreV7.counter
	sqlStoreV7.mu.Unlock()

	var u [16]byte
	_, _ = rand.Read(u[8:])
	var head [8]byte
	binary.BigEndian.PutUint64(head[:], ms<<16)
	copy(u[:6], head[:6])
	binary.BigEndian.PutUint16(u[6:8], 0x7000|counter)
	u[8] = u[8]&0x3f | 0x80
	return u
}

func sqlStoreUUIDString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}
