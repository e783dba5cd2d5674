package pgcluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// startCluster starts a cluster that is closed when the test ends.
func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts.Logger = zaptest.NewLogger(t)
	c, err := Start(t.Context(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// waitGone polls until pid has exited: the postmaster may take a moment to
// act on its parent death signal.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	require.Eventually(t, func() bool { return !processAlive(pid) }, 10*time.Second, 10*time.Millisecond,
		"process %d still running", pid)
}

func TestStartAndQuery(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{Settings: map[string]string{"work_mem": "7MB"}})

	require.NotZero(t, c.Port())
	require.Equal(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable", c.Port()), c.URL("x"))
	require.FileExists(t, filepath.Join(c.DataDir(), "PG_VERSION"))
	require.True(t, strings.HasPrefix(filepath.Base(filepath.Dir(c.DataDir())), fmt.Sprintf("projectord-pg-%d-", os.Getpid())))

	conn := connect(t, c.URL("postgres"))
	var user, fsync, syncCommit, workMem string
	var one int
	require.NoError(t, conn.QueryRow(t.Context(),
		`SELECT 1, current_user, current_setting('fsync'), current_setting('synchronous_commit'), current_setting('work_mem')`,
	).Scan(&one, &user, &fsync, &syncCommit, &workMem))
	require.Equal(t, 1, one)
	require.Equal(t, "postgres", user)
	require.Equal(t, "off", fsync)
	require.Equal(t, "off", syncCommit)
	require.Equal(t, "7MB", workMem)

	if os.Geteuid() == 0 {
		fi, err := os.Stat(c.DataDir())
		require.NoError(t, err)
		require.NotZero(t, fi.Sys().(*syscall.Stat_t).Uid, "data directory must not belong to root")
	}
}

func TestCreateAndDropDatabase(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})

	require.NoError(t, c.CreateDatabase(t.Context(), "Mixed Case", ""))
	tpl, err := pgx.Connect(t.Context(), c.URL("Mixed Case"))
	require.NoError(t, err)
	_, err = tpl.Exec(t.Context(), `CREATE TABLE t (id int)`)
	require.NoError(t, err)
	// A template must have no sessions while it is copied.
	require.NoError(t, tpl.Close(t.Context()))

	require.NoError(t, c.CreateDatabase(t.Context(), "copy", "Mixed Case"))
	var reg *string
	require.NoError(t, connect(t, c.URL("copy")).QueryRow(t.Context(), `SELECT to_regclass('t')::text`).Scan(&reg))
	require.NotNil(t, reg, "the copy must contain the template's table")

	// This session stays open: the drop must end it.
	connect(t, c.URL("Mixed Case"))
	require.NoError(t, c.DropDatabase(t.Context(), "Mixed Case"))
	require.NoError(t, c.DropDatabase(t.Context(), "Mixed Case"), "dropping a missing database is fine")
	_, err = pgx.Connect(t.Context(), c.URL("Mixed Case"))
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "3D000", pgErr.Code) // invalid_catalog_name
}

func TestStopStartKeepsData(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})
	port := c.Port()

	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	require.NoError(t, err)
	_, err = conn.Exec(t.Context(), `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')`)
	require.NoError(t, err)

	pid := c.PID()
	require.NotZero(t, pid)
	// The session stays open: a fast shutdown must not wait for it.
	require.NoError(t, c.Stop(t.Context()))
	require.Zero(t, c.PID())
	require.False(t, processAlive(pid))
	require.Error(t, conn.Ping(t.Context()))
	conn.Close(t.Context())
	_, err = pgx.Connect(t.Context(), c.URL("postgres"))
	require.Error(t, err)
	require.NoError(t, c.Stop(t.Context()), "stopping a stopped cluster does nothing")

	require.NoError(t, c.Start(t.Context()))
	require.NoError(t, c.Start(t.Context()), "starting a running cluster does nothing")
	require.Equal(t, port, c.Port())
	require.NotEqual(t, pid, c.PID())
	var v string
	require.NoError(t, connect(t, c.URL("postgres")).QueryRow(t.Context(), `SELECT v FROM kept`).Scan(&v))
	require.Equal(t, "survives", v)
}

func TestStartAfterKill(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{Durable: true})
	conn := connect(t, c.URL("postgres"))
	var syncCommit string
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT current_setting('synchronous_commit')`).Scan(&syncCommit))
	require.Equal(t, "on", syncCommit, "Durable must keep commits durable")
	_, err := conn.Exec(t.Context(), `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('committed')`)
	require.NoError(t, err)

	// What failure tests do: kill the postmaster behind the cluster's back.
	pid := c.PID()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.Eventually(t, func() bool { return c.PID() == 0 }, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, c.Start(t.Context()), "starting again runs crash recovery")
	var v string
	require.NoError(t, connect(t, c.URL("postgres")).QueryRow(t.Context(), `SELECT v FROM kept`).Scan(&v))
	require.Equal(t, "committed", v)
}

func TestStartWaitsForOldBackends(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})
	conn := connect(t, c.URL("postgres"))
	var backend int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT pg_backend_pid()`).Scan(&backend))

	// A frozen backend outlives its killed postmaster and keeps the old
	// shared memory attached, so the new server refuses to start.
	require.NoError(t, syscall.Kill(backend, syscall.SIGSTOP))
	t.Cleanup(func() { _ = syscall.Kill(backend, syscall.SIGCONT) })
	require.NoError(t, syscall.Kill(c.PID(), syscall.SIGKILL))
	require.Eventually(t, func() bool { return c.PID() == 0 }, 10*time.Second, 10*time.Millisecond)

	started := make(chan error, 1)
	go func() { started <- c.Start(context.Background()) }()
	require.Eventually(t, func() bool {
		log, _ := os.ReadFile(c.logPath())
		return strings.Contains(string(log), "pre-existing shared memory block")
	}, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, syscall.Kill(backend, syscall.SIGCONT))
	require.NoError(t, <-started)
	waitGone(t, backend)
	require.NoError(t, connect(t, c.URL("postgres")).Ping(t.Context()))
}

func TestCloseRemovesEverything(t *testing.T) {
	t.Parallel()
	c := startCluster(t, Options{})
	pid := c.PID()
	root := filepath.Dir(c.DataDir())
	connect(t, c.URL("postgres")) // a session must not keep anything alive

	require.NoError(t, c.Close())
	require.NoDirExists(t, root)
	require.False(t, processAlive(pid), "postmaster %d survived Close", pid)
	require.Zero(t, c.PID())
	require.NoError(t, c.Close(), "Close is idempotent")
	require.ErrorIs(t, c.Start(t.Context()), ErrClosed)
}

func TestStartFailsOnTakenPort(t *testing.T) {
	t.Parallel()
	// This listener accepts connections but never answers them, the worst
	// case for the readiness check.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	port := l.Addr().(*net.TCPAddr).Port

	_, err = Start(t.Context(), Options{Logger: zaptest.NewLogger(t), Port: port})
	require.ErrorIs(t, err, errPortInUse)
	require.ErrorContains(t, err, "server log:")
	require.ErrorContains(t, err, strconv.Itoa(port))
}

// helperEnv makes the test binary act as a cluster owner that the parent
// test kills.
const helperEnv = "PGCLUSTER_TEST_HELPER"

// TestHelperOwner is not a test: TestKilledOwnerLeavesNothing runs the test
// binary again to run only this, as the process that owns a cluster.
func TestHelperOwner(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("helper process for TestKilledOwnerLeavesNothing")
	}
	c, err := Start(t.Context(), Options{})
	require.NoError(t, err)
	fmt.Printf("READY %d %s\n", c.PID(), filepath.Dir(c.DataDir()))
	select {
	case <-time.After(time.Minute):
		t.Fatal("helper was not killed")
	case <-t.Context().Done():
	}
}

// TestKilledOwnerLeavesNothing kills -9 the process owning a cluster, as a
// test timeout or an impatient developer would: the postmaster must die of
// its parent death signal, and the next sweep must remove the directory.
func TestKilledOwnerLeavesNothing(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperOwner$")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	var pid int
	var root string
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if _, err := fmt.Sscanf(lines.Text(), "READY %d %s", &pid, &root); err == nil {
			break
		}
	}
	require.NotZero(t, pid, "helper did not report its cluster; stderr:\n%s", stderr.String())
	require.DirExists(t, root)
	require.True(t, processAlive(pid))

	require.NoError(t, cmd.Process.Kill())
	err = cmd.Wait()
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "helper: %v", err)

	waitGone(t, pid)
	sweepStaleDirs(zaptest.NewLogger(t), filepath.Dir(root))
	require.NoDirExists(t, root)
}
