package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
	"github.com/projectord/projectord/internal/testsupport"
)

// binary is projectord built once for the process tests, with version
// information injected the way `make build` does.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "projectord-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "projectord")
	build := exec.Command("go", "build", "-o", binary,
		"-ldflags", "-X main.version=v9.9.9-test -X main.commit=abc123 -X main.date=2026-01-02T03:04:05Z", ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "error building projectord:", err)
		os.Exit(1)
	}
	code := pgtest.Main(m) // an empty template: migrate tests start from nothing
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the command in-process and returns exit code, stdout and stderr.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := execute(t.Context(), args, strings.NewReader(""), &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
	return p
}

func TestConfigValidateReportsEveryProblemAndExits2(t *testing.T) {
	t.Parallel()
	f := writeFile(t, "bad.yaml", `
database:
  url: postgres://app:secret@db.example/app
projectors:
  - name: orders
    batchsize: 10
    sink: {sql: {handlers: {OrderPlaced: "INSERT INTO t VALUES (@data)"}}}
  - name: Orders Two
    sink: {sql: {handlers: {A: "SELECT 1"}}}
  - name: totals
    batch_size: 20000
    sink: {sql: {handlers: {A: "SELECT 1"}}}
`)
	code, _, stderr := cli(t, "config", "validate", "--config", f)
	require.Equal(t, exitConfig, code)
	for _, want := range []string{
		`projectors[0].batchsize: unknown key`,
		`projectors[1].name:`,
		`projectors[2].batch_size: must be between 1 and 10000`,
	} {
		require.Contains(t, stderr, want)
	}
	require.Contains(t, stderr, "3 problems")
	require.NotContains(t, stderr, "secret")
}

func TestConfigPrintRedactsPassword(t *testing.T) {
	// Not parallel: sets the process environment.
	t.Setenv("PROJECTORD_DATABASE_URL", "postgres://u:secret@host/db")
	t.Setenv("PROJECTORD_CONFIG", writeFile(t, "p.yaml", "log: {level: debug}\n"))
	code, out, stderr := cli(t, "config", "print")
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "postgres://u:")
	require.Contains(t, out, "@host/db")
	require.Contains(t, out, "level: debug")
	require.NotContains(t, out+stderr, "secret")

	t.Setenv("PROJECTORD_DATABASE_URL", "host=db user=u password='secret' dbname=x")
	code, out, stderr = cli(t, "config", "print")
	require.Equal(t, exitOK, code, stderr)
	require.NotContains(t, out+stderr, "secret")
}

func TestVersionFromLdflags(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(binary, "version").CombinedOutput()
	require.NoError(t, err)
	require.Contains(t, string(out), "projectord v9.9.9-test (commit abc123, built 2026-01-02T03:04:05Z, go1.")
	code, inproc, _ := cli(t, "version", "--json")
	require.Equal(t, exitOK, code)
	require.Contains(t, inproc, `"version":"dev"`, "sensible output without ldflags")
}

func TestUsageErrorsExit2WithOneLine(t *testing.T) {
	t.Parallel()
	code, _, stderr := cli(t, "frobnicate")
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, `unknown command "frobnicate"`)
	code, _, stderr = cli(t, "run", "--no-such-flag")
	require.Equal(t, exitConfig, code)
	require.NotContains(t, stderr, "Usage:")
	code, _, stderr = cli(t, "run", "--config", "/nonexistent/projectord.yaml")
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, "/nonexistent/projectord.yaml")
}

func TestConcurrentMigrateProcessesBothSucceed(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	cfg := writeFile(t, "m.yaml", "database: {url: '"+url+"'}\n")
	var wg sync.WaitGroup
	outs := make([][]byte, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = exec.Command(binary, "migrate", "--config", cfg).CombinedOutput()
		}()
	}
	wg.Wait()
	for i := range 2 {
		require.NoError(t, errs[i], string(outs[i]))
	}
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	var n, distinct, version int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT version), max(version) FROM projectord.schema_migrations`).Scan(&n, &distinct, &version))
	require.Equal(t, store.SchemaVersion(), version)
	require.Equal(t, n, distinct, "each schema version is recorded once")
	applied := strings.Count(string(outs[0])+string(outs[1]), fmt.Sprintf("applied %d)", n))
	require.Equal(t, 1, applied, "exactly one process applied the migrations, each recorded once:\n%s\n%s", outs[0], outs[1])
	require.Equal(t, 1, strings.Count(string(outs[0])+string(outs[1]), "applied 0)"), "the other applied none")
}

// proc is a projectord process under test. exited is closed when it has
// exited; err is its Wait result from then on.
type proc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	err    error
}

// exitedNow reports whether the process has exited.
func (p *proc) exitedNow() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// wait returns the exit error, or fails the test after d.
func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		t.Fatalf("%v did not exit within %s", p.cmd.Args, d)
		return nil
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...), out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("output of %v:\n%s", args, p.out.String())
		}
	})
	return p
}

func TestRunSIGTERMDuringCatchUpHandsOver(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(ctx, `CREATE TABLE events (
		global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
		stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL,
		data jsonb NOT NULL, metadata jsonb, created_at timestamptz NOT NULL DEFAULT now());
		CREATE INDEX ON events (transaction_id, global_position);
		CREATE TABLE applied (position bigint NOT NULL, node text NOT NULL);
		INSERT INTO events (stream_id, stream_version, event_type, data)
		SELECT 's-' || g, 1, 'A', '{}' FROM generate_series(1, 200000) g`)
	require.NoError(t, err)
	cfgFile := func(node string) string {
		return writeFile(t, node+".yaml", fmt.Sprintf(`
database: {url: '%s'}
coordination: {node_id: %s, acquire_interval: 1s}
http: {listen: ""}
shutdown_timeout: 5s
log: {level: info}
projectors:
  - name: totals
    batch_size: 200
    sink:
      sql:
        handlers:
          A: INSERT INTO applied (position, node) VALUES (@position, '%s')
`, url, node, node))
	}
	a := startProc(t, "run", "--config", cfgFile("node-a"))
	waitFor(t, 30*time.Second, func() bool {
		var n int64
		return pool.QueryRow(ctx, `SELECT events_applied FROM projectord.checkpoints WHERE projector = 'totals' AND leader_node = 'node-a'`).Scan(&n) == nil && n > 5000
	})
	b := startProc(t, "run", "--config", cfgFile("node-b"))
	waitFor(t, 30*time.Second, func() bool {
		var up bool
		return pool.QueryRow(ctx, `SELECT count(*) = 2 FROM projectord.nodes`).Scan(&up) == nil && up
	})

	sent := time.Now()
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGTERM))
	// The standby's first committed batch ends the handover.
	var handover time.Duration
	waitFor(t, 10*time.Second, func() bool {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM applied WHERE node = 'node-b'`).Scan(&n)
		if err == nil && n > 0 {
			handover = time.Since(sent)
			return true
		}
		return false
	})
	require.NoError(t, a.wait(t, 10*time.Second), "SIGTERM exits 0")
	require.Less(t, time.Since(sent), 5*time.Second, "within shutdown_timeout")
	t.Logf("SIGTERM handover: standby's first batch committed %s after the signal", handover)
	require.Less(t, handover, time.Second)
	require.Contains(t, a.out.String(), "leadership released")

	waitFor(t, 60*time.Second, func() bool {
		var n int64
		return pool.QueryRow(ctx, `SELECT events_applied FROM projectord.checkpoints WHERE projector = 'totals'`).Scan(&n) == nil && n == 200000
	})
	var total, distinct, fromA int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT position), count(*) FILTER (WHERE node = 'node-a') FROM applied`).Scan(&total, &distinct, &fromA))
	require.Equal(t, 200000, total, "nothing missing, nothing twice")
	require.Equal(t, 200000, distinct)
	require.Positive(t, fromA)
	require.NoError(t, b.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, b.wait(t, 10*time.Second))
}

var waitFor = testsupport.WaitFor

func TestConfigValidateRefusesHandlersThatEndTheTransaction(t *testing.T) {
	t.Parallel()
	for handler, msg := range map[string]string{
		`"DO $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$"`: "projectors[0].sink.sql.handlers[A]: a DO block may not COMMIT",
		`"-- note\rCOMMIT"`:                         `projectors[0].sink.sql.handlers[A]: "COMMIT" statements are not allowed`,
		`"DO $$ BEGIN /* undo */ ROLLBACK; END $$"`: "projectors[0].sink.sql.handlers[A]: a DO block may not ROLLBACK",
	} {
		f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: 'postgres://localhost/app'}
projectors:
  - name: totals
    sink:
      sql:
        handlers:
          A: %s
`, handler))
		code, _, stderr := cli(t, "config", "validate", "--config", f)
		require.Equal(t, exitConfig, code, handler)
		require.Contains(t, stderr, msg, handler)
		require.Contains(t, stderr, "the batch's transaction is projectord's", handler)
	}
}

func TestConfigValidateCheckDBNamesProjectorAndEventType(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(t.Context(), `CREATE TABLE events (global_position bigint, transaction_id xid8, stream_id text,
		stream_version bigint, event_type text, data jsonb, metadata jsonb, created_at timestamptz);
		CREATE INDEX ON events (transaction_id, global_position);
		CREATE TABLE orders (id text PRIMARY KEY, total numeric)`)
	require.NoError(t, err)
	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
projectors:
  - name: totals
    sink:
      sql:
        handlers:
          OrderPlaced: INSERT INTO orders (id, total) VALUES (@data->>'id', 0)
          ItemAdded: UPDATE orders SET totl = totl + 1 WHERE id = @data->>'id'
`, url))
	code, _, stderr := cli(t, "config", "validate", "--check-db", "--config", f)
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, "projectors[0].sink.sql.handlers[ItemAdded]: projector totals:")
	require.Contains(t, stderr, `column "totl"`)
	require.NotContains(t, stderr, "OrderPlaced")

	code, out, stderr := cli(t, "config", "validate", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "configuration OK: 1 projector")
}

func TestConfigValidateCheckDBWarnsAboutNullableColumns(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(t.Context(), `CREATE TABLE events (global_position bigint NOT NULL, transaction_id xid8 NOT NULL,
		stream_id text NOT NULL, stream_version bigint, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
		created_at timestamptz);
		CREATE INDEX ON events (transaction_id, global_position)`)
	require.NoError(t, err)
	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
projectors:
  - name: all
    sink: {sql: {handlers: {"*": "SELECT @position"}}}
`, url))
	code, out, stderr := cli(t, "config", "validate", "--check-db", "--config", f)
	require.Equal(t, exitOK, code, "a warning, not an error: %s", stderr)
	require.Contains(t, out, "configuration OK")
	require.Contains(t, stderr, `warning: source.columns.stream_version: column "stream_version" of public.events is nullable: a row with NULL there becomes a poison event`)
	require.Contains(t, stderr, `warning: source.columns.created_at: column "created_at" of public.events is nullable`)
	require.Equal(t, 2, strings.Count(stderr, "warning:"), "only the nullable mapped columns: %s", stderr)

	_, err = pool.Exec(t.Context(), `ALTER TABLE events ALTER COLUMN global_position DROP NOT NULL`)
	require.NoError(t, err)
	code, _, stderr = cli(t, "config", "validate", "--check-db", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stderr, `warning: source.columns.position: column "global_position" of public.events is nullable: a row with NULL there is never read`)
}

// A table without the cursor index sorts itself for every batch: check-db
// and run refuse it (exit 2) naming the index and the statement that
// creates it; source.allow_unindexed lets both go on with a warning, and
// the replica says so in projectord_source_unindexed.
func TestMissingCursorIndexIsRefusedUnlessAllowed(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(t.Context(), `CREATE TABLE events (global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), stream_id text NOT NULL, stream_version bigint NOT NULL,
		event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb, created_at timestamptz NOT NULL DEFAULT now());
		CREATE TABLE seen (position bigint PRIMARY KEY);
		INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('s', 1, 'A', '{}')`)
	require.NoError(t, err)
	body := fmt.Sprintf(`
database: {url: '%s'}
projectors:
  - name: p
    sink: {sql: {handlers: {"*": "INSERT INTO seen VALUES (@position)"}}}
`, url)
	f := writeFile(t, "c.yaml", body)
	want := `CREATE INDEX CONCURRENTLY "events_transaction_id_global_position_idx" ON "public"."events" ("transaction_id", "global_position")`

	code, _, stderr := cli(t, "config", "validate", "--check-db", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "no cursor index")
	require.Contains(t, stderr, want)
	require.Contains(t, stderr, "source.allow_unindexed")

	code, _, stderr = cli(t, "run", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "no cursor index")
	require.Contains(t, stderr, want)

	port := freePort(t)
	allowed := writeFile(t, "allowed.yaml", body+fmt.Sprintf("source: {allow_unindexed: true}\nhttp: {listen: '127.0.0.1:%d'}\n", port))
	code, _, stderr = cli(t, "config", "validate", "--check-db", "--config", allowed)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stderr, "warning: source.allow_unindexed:")

	p := startProc(t, "run", "--config", allowed)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitFor(t, 30*time.Second, func() bool {
		var n int
		return pool.QueryRow(t.Context(), `SELECT count(*) FROM seen`).Scan(&n) == nil && n == 1
	})
	waitFor(t, 10*time.Second, func() bool {
		_, metrics := get(base + "/metrics")
		return strings.Contains(metrics, "projectord_source_unindexed 1")
	})
	require.Contains(t, p.out.String(), "source table has no cursor index")

	// Once the index exists, a restarted replica reports 0.
	_, err = pool.Exec(t.Context(), `CREATE INDEX ON events (transaction_id, global_position)`)
	require.NoError(t, err)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.wait(t, 30*time.Second))
	startProc(t, "run", "--config", allowed)
	waitFor(t, 30*time.Second, func() bool {
		_, metrics := get(base + "/metrics")
		return strings.Contains(metrics, "projectord_source_unindexed 0")
	})
}

func TestSourcePrepareApplies(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(t.Context(), `CREATE TABLE events (global_position bigint GENERATED ALWAYS AS IDENTITY, stream_id text,
		stream_version bigint, event_type text, data jsonb, metadata jsonb, created_at timestamptz DEFAULT now());
		INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('s', 1, 'A', '{}')`)
	require.NoError(t, err)
	f := writeFile(t, "c.yaml", fmt.Sprintf("database: {url: '%s'}\n", url))

	code, out, stderr := cli(t, "source", "prepare", "--notify", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "ADD COLUMN IF NOT EXISTS \"transaction_id\" xid8")
	require.Contains(t, out, "CREATE INDEX CONCURRENTLY")
	require.Contains(t, out, "CREATE TRIGGER")
	require.Contains(t, out, "Not applied")
	var cols int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.columns WHERE table_name = 'events' AND column_name = 'transaction_id'`).Scan(&cols))
	require.Zero(t, cols, "printing changes nothing")

	code, _, stderr = cli(t, "source", "prepare", "--notify", "--apply", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	code, _, stderr = cli(t, "source", "prepare", "--apply", "--config", f)
	require.Equal(t, exitOK, code, "idempotent: %s", stderr)
	var oldXID, newXID uint64
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT transaction_id FROM events`).Scan(&oldXID))
	require.Equal(t, uint64(1), oldXID)
	require.NoError(t, pool.QueryRow(t.Context(), `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('s', 2, 'A', '{}') RETURNING transaction_id`).Scan(&newXID))
	require.Greater(t, newXID, oldXID)
}

func TestPasswordNeverReachesLogsOrErrors(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	// Nothing listens there: every connection attempt fails and is reported.
	url := fmt.Sprintf("postgres://app:s3cr3t-pw@127.0.0.1:%d/app?connect_timeout=1", port)
	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
http: {listen: ""}
log: {level: debug}
projectors:
  - name: p
    sink: {sql: {handlers: {A: "SELECT 1"}}}
`, url))
	p := startProc(t, "run", "--config", f)
	waitFor(t, 30*time.Second, func() bool { return strings.Count(p.out.String(), "database not ready") >= 2 })
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.wait(t, 10*time.Second))
	require.NotContains(t, p.out.String(), "s3cr3t-pw")

	for _, args := range [][]string{{"migrate"}, {"status"}, {"config", "validate", "--check-db"}, {"source", "prepare", "--apply"}} {
		out, err := exec.Command(binary, append(args, "--config", f)...).CombinedOutput()
		require.Error(t, err, "%v must fail without a database", args)
		require.NotContains(t, string(out), "s3cr3t-pw", "%v", args)
		require.Contains(t, string(out), "projectord: ", "%v prints one clear line", args)
	}
}

func TestResetNeedsConfirmationAndAKnownProjector(t *testing.T) {
	t.Parallel()
	f := writeFile(t, "r.yaml", "database: {url: 'postgres://u@127.0.0.1:1/x'}\nprojectors:\n  - name: p\n    sink: {sql: {handlers: {A: 'SELECT 1'}, reset: 'TRUNCATE t'}}\n")
	code, _, stderr := cli(t, "reset", "p", "--config", f)
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, "--yes")
	code, _, stderr = cli(t, "reset", "nope", "--yes", "--config", f)
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, `no projector named "nope"`)
}

func TestRunExits2WhenAnOrderingSwitchCannotBeConverted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = store.Migrate(ctx, pool, "test")
	require.NoError(t, err)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	// Position 2 has the smaller xid, so an xid8 leader applies it before 1:
	// a checkpoint there covers 2 and not 1, which no position cursor says.
	early, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer early.Rollback(ctx)
	_, err = early.Exec(ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('late', 1, 'A', '{}')`)
	require.NoError(t, err)
	var c store.Cursor
	require.NoError(t, early.QueryRow(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ('early', 1, 'A', '{}') RETURNING transaction_id, global_position`).Scan(&c.XID, &c.Position))
	require.NoError(t, early.Commit(ctx))
	target := store.NewTarget(pool, 5*time.Second)
	cp, err := target.Claim(ctx, "totals", "old", 0, store.OrderXID8)
	require.NoError(t, err)
	require.NoError(t, target.Commit(ctx, store.CommitRequest{Projector: "totals", Epoch: cp.Epoch, To: c}, nil))

	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
source: {ordering: position}
coordination: {acquire_interval: 100ms}
http: {listen: ""}
projectors:
  - name: totals
    sink: {sql: {handlers: {A: "SELECT 1"}}}
`, url))
	p := startProc(t, "run", "--config", f)
	err = p.wait(t, 60*time.Second)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, p.out.String())
	require.Equal(t, exitConfig, exit.ExitCode(), p.out.String())
	require.Contains(t, p.out.String(), "cannot be converted exactly")
	require.Contains(t, p.out.String(), "projectord reset totals --yes")
}
