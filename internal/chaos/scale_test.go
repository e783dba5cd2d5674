package chaos

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgcluster"
)

// BenchmarkScale runs N projectors on 3 replica processes over 100k events,
// started half a second apart, and measures how the replicas share them
// (led projectors per replica), how long catching up takes and, once
// everything is caught up, what idling costs: connections and RSS per
// replica, CPU per replica and database transactions per second. In the
// same run: 5 projectors as the idle baseline (idle cost must not grow with
// the number of projectors), and 500 projectors with coordination.balance
// off, where the first replica up leads all of them, as the catch-up
// baseline.
func BenchmarkScale(b *testing.B) {
	small := measureScale(b, 5, true)
	large := measureScale(b, 500, true)
	single := measureScale(b, 500, false)
	b.ReportMetric(large.connsPerReplica, "conns/replica")
	b.ReportMetric(large.rssMB, "max-RSS-MB/replica")
	b.ReportMetric(large.cpuPct, "idle-CPU-%/replica")
	b.ReportMetric(large.qps, "idle-db-xact/s")
	b.ReportMetric(large.sps, "idle-statements/s")
	b.ReportMetric(large.sps/small.sps, "idle-statements-ratio-500vs5")
	b.ReportMetric(float64(large.spread()), "led-spread-500")
	b.ReportMetric(single.catchUp.Seconds()/large.catchUp.Seconds(), "catch-up-speedup-balanced-vs-one-leader")
	fmt.Printf("\nscale (3 replicas started 0.5 s apart, 100k events, default pool max_conns 8)\n")
	fmt.Printf("| projectors | balance | led per replica | caught up in | conns/replica | max RSS/replica | idle CPU/replica | idle statements/s (all replicas) | idle db xact/s (server) |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range []scaleResult{small, large, single} {
		fmt.Printf("| %d | %t | %v | %s | %.0f | %.1f MB | %.2f %% | %.1f | %.1f |\n", s.projectors, s.balance, s.led, s.catchUp.Round(time.Millisecond),
			s.connsPerReplica, s.rssMB, s.cpuPct, s.sps, s.qps)
	}
	fmt.Printf("catch-up of 500 projectors: %.2fx faster balanced than with one replica leading all; idle statements/s 500 vs 5 projectors: %.2fx\n",
		single.catchUp.Seconds()/large.catchUp.Seconds(), large.sps/small.sps)
}

type scaleResult struct {
	projectors      int
	balance         bool
	led             []int // per replica, most first, once caught up
	catchUp         time.Duration
	connsPerReplica float64
	rssMB           float64
	cpuPct          float64
	// sps is the replicas' statements per second (pg_stat_statements);
	// qps the server's transactions per second (pg_stat_database), which
	// also counts autovacuum's, busy with the rows catching up dirtied.
	sps, qps float64
}

// spread is the most minus the fewest projectors a replica leads.
func (s scaleResult) spread() int {
	if len(s.led) == 0 {
		return 0
	}
	return s.led[0] - s.led[len(s.led)-1]
}

func measureScale(b *testing.B, n int, balance bool) scaleResult {
	ctx := context.Background()
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cluster, err := pgcluster.Start(cctx, pgcluster.Options{Settings: map[string]string{"max_connections": "100",
		"shared_preload_libraries": "pg_stat_statements"}})
	require.NoError(b, err)
	defer cluster.Close()
	url := cluster.URL("postgres")
	pool, err := pgxpool.New(ctx, url)
	require.NoError(b, err)
	defer pool.Close()
	_, err = pool.Exec(ctx, `CREATE EXTENSION pg_stat_statements`)
	require.NoError(b, err)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(ctx, q)
		require.NoError(b, err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		SELECT 's-' || g, 1, 'T' || (g % 10), '{}' FROM generate_series(1, 100000) g`)
	require.NoError(b, err)

	var ps strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&ps, "  - {name: p%03d, event_types: [T%d], batch_size: 1000, sink: {sql: {handlers: {T%d: 'SELECT 1'}}}}\n", i, i%10, i%10)
	}
	dir := b.TempDir()
	type proc struct {
		cmd *exec.Cmd
		out bytes.Buffer
	}
	var procs []*proc
	start := time.Now()
	for r := 1; r <= 3; r++ {
		cfg := filepath.Join(dir, fmt.Sprintf("r%d.yaml", r))
		require.NoError(b, os.WriteFile(cfg, []byte(fmt.Sprintf(`
database: {url: '%s'}
coordination: {node_id: scale-%d, balance: %t}
http: {listen: ""}
log: {level: warn}
projectors:
%s`, url, r, balance, ps.String())), 0o600))
		p := &proc{cmd: exec.Command(binary, "run", "--config", cfg)}
		p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
		require.NoError(b, p.cmd.Start())
		procs = append(procs, p)
		if r < 3 {
			time.Sleep(500 * time.Millisecond) // the roll-out's pace, as the issue measured it: not synchronisation
		}
	}
	defer func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			_ = p.cmd.Process.Signal(os.Interrupt)
			wg.Add(1)
			go func() { defer wg.Done(); _ = p.cmd.Wait() }()
		}
		wg.Wait()
	}()
	var last store.Cursor
	require.NoError(b, pool.QueryRow(ctx, `SELECT transaction_id, global_position FROM events ORDER BY 1 DESC, 2 DESC LIMIT 1`).Scan(&last.XID, &last.Position))
	deadline := time.Now().Add(10 * time.Minute)
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		var done int
		// Fails until the first replica has migrated the schema.
		err := pool.QueryRow(ctx, `SELECT count(*) FROM projectord.checkpoints WHERE last_xid = $1 AND last_position = $2`, last.XID, last.Position).Scan(&done)
		if err == nil && done == n {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d projectors caught up after 10 minutes", done, n)
		}
		<-poll.C
	}
	res := scaleResult{projectors: n, balance: balance, catchUp: time.Since(start)}

	// Idling starts once the status refreshers are done with catching up:
	// a refresh measures the lag of every projector that was behind when
	// it read the checkpoints, and one begun during catch-up goes on
	// through up to n of them (10 s and more at 500 on a busy machine).
	// So wait for a whole refresh interval (5 s) without a lag query.
	lagQueries := func() int64 {
		var n int64
		require.NoError(b, pool.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements
			WHERE query LIKE 'SELECT count(*), min(created)%'`).Scan(&n))
		return n
	}
	for settled := false; !settled; {
		if time.Now().After(deadline) {
			b.Fatal("the status refreshers were still measuring lag 10 minutes after the start")
		}
		before := lagQueries()
		time.Sleep(6 * time.Second) // a measurement window: one refresh interval and a bit
		settled = lagQueries() == before
	}
	// Then measure 10 s of idling. These sleeps are the measurement
	// windows, not synchronisation.
	xacts := func() int64 {
		var x int64
		require.NoError(b, pool.QueryRow(ctx, `SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'postgres'`).Scan(&x))
		return x
	}
	cpu := make([]float64, len(procs))
	for i, p := range procs {
		cpu[i] = cpuSeconds(b, p.cmd.Process.Pid)
	}
	// The replicas' statements, whoever runs them, but not ours.
	statements := func() int64 {
		var n int64
		require.NoError(b, pool.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements
			WHERE query NOT LIKE '%pg_stat_statements%' AND query NOT LIKE '%pg_stat_database%'`).Scan(&n))
		return n
	}
	x0, s0, t0 := xacts(), statements(), time.Now()
	time.Sleep(10 * time.Second)
	x1, s1, elapsed := xacts(), statements(), time.Since(t0)
	// pg_stat_database counts our own probes too; they are negligible.
	res.qps = float64(x1-x0) / elapsed.Seconds()
	res.sps = float64(s1-s0) / elapsed.Seconds()
	for i, p := range procs {
		pct := (cpuSeconds(b, p.cmd.Process.Pid) - cpu[i]) / elapsed.Seconds() * 100
		res.cpuPct = max(res.cpuPct, pct)
		res.rssMB = max(res.rssMB, rssMB(b, p.cmd.Process.Pid))
	}
	var conns int
	require.NoError(b, pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'projectord%scale-%'`).Scan(&conns))
	res.connsPerReplica = float64(conns) / 3
	// Who leads what, from the locks each coordination session holds
	// (a replica holding none counts as 0).
	rows, err := pool.Query(ctx, `SELECT count(l.pid) FROM pg_stat_activity a
		LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted
		WHERE a.application_name LIKE 'projectord-coord scale-%' GROUP BY a.pid ORDER BY 1 DESC`)
	require.NoError(b, err)
	res.led, err = pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(b, err)
	return res
}

// cpuSeconds is the process's user+system CPU time from /proc.
func cpuSeconds(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(b, err)
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func rssMB(b *testing.B, pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(b, err)
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}
