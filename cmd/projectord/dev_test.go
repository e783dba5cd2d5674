package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/demo"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store/pgtest"
)

var devProjectors = []string{"order_totals", "revenue_by_day", "shipments_pending"}

// devProc is a `projectord dev` process with its stdout (banner and status
// lines) and stderr (logs) apart.
type devProc struct {
	cmd         *exec.Cmd
	stdout, log *syncBuffer
	exited      chan struct{}
	err         error
}

func startDev(t *testing.T, args ...string) *devProc {
	t.Helper()
	p := &devProc{cmd: exec.Command(binary, append([]string{"dev"}, args...)...),
		stdout: &syncBuffer{}, log: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.log
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("stdout of dev %v:\n%s\nstderr:\n%s", args, p.stdout, p.log)
		}
	})
	return p
}

// wait returns the exit error, or fails the test after d.
func (p *devProc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		t.Fatalf("dev did not exit within %s", d)
		return nil
	}
}

// devLine is one projector status line.
type devLine struct {
	name, state     string
	position, head  int64
	lagEvents       int64
	lagSeconds, eps float64
}

var devLineRE = regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d (\S+)\s+(\S+)\s+pos\s+(\d+)/(\d+)\s+lag\s+(\d+) ev\s+([\d.]+)s\s+([\d.]+) ev/s`)

func parseDevLines(out string) map[string][]devLine {
	lines := map[string][]devLine{}
	for _, m := range devLineRE.FindAllStringSubmatch(out, -1) {
		l := devLine{name: m[1], state: m[2]}
		l.position, _ = strconv.ParseInt(m[3], 10, 64)
		l.head, _ = strconv.ParseInt(m[4], 10, 64)
		l.lagEvents, _ = strconv.ParseInt(m[5], 10, 64)
		l.lagSeconds, _ = strconv.ParseFloat(m[6], 64)
		l.eps, _ = strconv.ParseFloat(m[7], 64)
		lines[l.name] = append(lines[l.name], l)
	}
	return lines
}

// following reports whether every projector has led for at least n status
// lines with its position growing.
func following(lines map[string][]devLine, n int) bool {
	for _, name := range devProjectors {
		var leading []devLine
		for _, l := range lines[name] {
			if l.state == "leader" && l.position > 0 {
				leading = append(leading, l)
			}
		}
		if len(leading) < n || leading[len(leading)-1].position <= leading[len(leading)-n].position {
			return false
		}
	}
	return true
}

// caughtUpOnce reports whether every projector has had a status line with
// nothing left to apply, after being at work.
func caughtUpOnce(lines map[string][]devLine) bool {
	for _, name := range devProjectors {
		ok := false
		for _, l := range lines[name] {
			if l.state == "leader" && l.position > 0 && l.lagEvents == 0 {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// TestDevShowsProjectorsFollowingAndCleansUpOnCtrlC is `make demo` in a
// test: a throw-away cluster, the generator and the three projectors; then
// Ctrl-C must check the read models, exit 0 and leave nothing behind.
func TestDevShowsProjectorsFollowingAndCleansUpOnCtrlC(t *testing.T) {
	t.Parallel()
	p := startDev(t, "--http.listen", "127.0.0.1:0", "--rate", "400")

	bannerRE := regexp.MustCompile(`PostgreSQL  (\S+)  \(throw-away, in (\S+); removed on exit\)[\s\S]*status      (http://\S+)/status`)
	var dbURL, dir, base string
	waitFor(t, 30*time.Second, func() bool {
		m := bannerRE.FindStringSubmatch(p.stdout.String())
		if m == nil {
			return false
		}
		dbURL, dir, base = m[1], m[2], m[3]
		return true
	})
	require.Contains(t, filepath.Base(dir), fmt.Sprintf("projectord-pg-%d-", p.cmd.Process.Pid))
	pidFile, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	require.NoError(t, err)
	postmaster, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	require.NoError(t, err)

	// Live: every projector leads, its position grows line after line, and
	// it keeps up: its lag is back at 0 while the writers are writing.
	waitFor(t, 30*time.Second, func() bool {
		lines := parseDevLines(p.stdout.String())
		return following(lines, 3) && caughtUpOnce(lines)
	})

	code, body := get(base + "/status")
	require.Equal(t, 200, code, body)
	var snap runner.Snapshot
	require.NoError(t, json.Unmarshal([]byte(body), &snap))
	require.Len(t, snap.Projectors, 3)
	m, err := scrape(base)
	require.NoError(t, err)
	for _, name := range devProjectors {
		require.Positive(t, m[`projectord_events_processed_total{projector="`+name+`"}`], name)
	}
	pool, err := pgxpool.New(t.Context(), dbURL)
	require.NoError(t, err)
	var orders int64
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM order_totals`).Scan(&orders))
	require.Positive(t, orders, "the read model fills while dev runs")
	pool.Close()

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGINT))
	require.NoError(t, p.wait(t, 30*time.Second), "Ctrl-C exits 0")

	out := p.stdout.String()
	require.Regexp(t, `check: the read models match all \d+ events: order_totals \d+ orders`, out)
	final := parseDevLines(out[strings.Index(out, "\nstopping (SIGINT)"):])
	for _, name := range devProjectors {
		require.NotEmpty(t, final[name], name)
		last := final[name][len(final[name])-1]
		require.Zero(t, last.lagEvents, "%s caught up before the check", name)
		require.Zero(t, last.lagSeconds, name)
	}

	// Nothing left behind: no server, no directory, nothing listening.
	require.Contains(t, out, "PostgreSQL stopped; "+dir+" removed")
	require.NoDirExists(t, dir)
	require.ErrorIs(t, syscall.Kill(postmaster, 0), syscall.ESRCH, "postmaster %d survived", postmaster)
	left, err := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("projectord-pg-%d-*", p.cmd.Process.Pid)))
	require.NoError(t, err)
	require.Empty(t, left)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = pgx.Connect(ctx, dbURL)
	require.Error(t, err)
	t.Logf("stdout:\n%s", lastLines(out, 12))
}

// TestDevUsesAGivenDatabaseAndDropsNothing runs dev twice against one
// database with --duration: the second run continues where the first
// stopped, and the read models stay consistent with the events.
func TestDevUsesAGivenDatabaseAndDropsNothing(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	run := func(args ...string) string {
		t.Helper()
		p := startDev(t, append([]string{"--database-url", url, "--http.listen", "", "--duration", "1500ms"}, args...)...)
		require.NoError(t, p.wait(t, 30*time.Second), "--duration exits 0")
		out := p.stdout.String()
		require.Contains(t, out, "stopping (--duration 1.5s is up)")
		require.Regexp(t, `check: the read models match all \d+ events`, out)
		require.Contains(t, out, "dev dropped nothing")
		require.NotContains(t, out, "metrics")
		return out
	}
	run("--notify", "--rate", "500", "--writers", "3")

	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	count := func(sql string) int64 {
		t.Helper()
		var n int64
		require.NoError(t, pool.QueryRow(t.Context(), sql).Scan(&n))
		return n
	}
	first := count(`SELECT count(*) FROM events`)
	require.Positive(t, first)
	require.Equal(t, count(`SELECT count(DISTINCT stream_id) FROM events WHERE event_type = 'OrderPlaced'`), count(`SELECT count(*) FROM order_totals`))
	require.EqualValues(t, 3, count(`SELECT count(*) FROM projectord.checkpoints`))
	require.EqualValues(t, 1, count(`SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.events'::regclass AND NOT tgisinternal`))

	run("--rate", "300")
	require.Greater(t, count(`SELECT count(*) FROM events`), first, "the second run appends")
	require.EqualValues(t, 1, count(`SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.events'::regclass AND NOT tgisinternal`),
		"the trigger stays without --notify")
	r, err := demo.Verify(t.Context(), pool)
	require.NoError(t, err)
	require.True(t, r.OK(), "%v", r.Problems)
	require.Equal(t, count(`SELECT count(*) FROM events`), r.Events)
	require.Positive(t, r.Orders)
}

func TestDevRefusesAnEventsTableItDidNotCreate(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = pool.Exec(t.Context(), `CREATE TABLE events (id bigint PRIMARY KEY, body jsonb)`)
	require.NoError(t, err)

	code, _, stderr := cli(t, "dev", "--database-url", url, "--http.listen", "")
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "table public.events exists and was not created by projectord dev")
	var tables int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables))
	require.Equal(t, 1, tables, "dev created nothing")
}

func TestDevRejectsBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--writers", "0"},
		{"--rate", "-1"},
		{"--duration", "-1s"},
		{"--config", "configs/example.yaml"},
		{"--database-url", "postgres://a@b/c", "--database.url", "postgres://x@y/z"},
		{"--log.level", "loud"},
		{"--database-url", "postgres://a@b/c", "--http.listen", "nonsense"},
	} {
		code, _, stderr := cli(t, append([]string{"dev"}, args...)...)
		require.Equal(t, exitConfig, code, "%v: %s", args, stderr)
	}
}

// TestDevConfigIsValid keeps configs/dev.yaml loadable on its own and its
// handlers valid SQL against the tables dev creates.
func TestDevConfigIsValid(t *testing.T) {
	t.Parallel()
	code, out, stderr := cli(t, "config", "validate", "--config", "../../configs/dev.yaml")
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "configuration OK: 3 projectors")

	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	_, err = demo.Setup(t.Context(), pool, demo.SetupOptions{})
	require.NoError(t, err)
	cmd := exec.Command(binary, "config", "validate", "--check-db", "--config", "../../configs/dev.yaml")
	cmd.Env = append(os.Environ(), "PROJECTORD_DATABASE_URL="+url)
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, string(b))
	require.Contains(t, string(b), "configuration OK: 3 projectors")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
