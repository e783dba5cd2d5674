package bench

import (
	"cmp"
	"context"
	"fmt"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
	"github.com/projectord/projectord/internal/testsupport"
)

// Deadlines. Generous: they catch hangs, not slowness.
const (
	setupTimeout = 10 * time.Minute // loading data
	runTimeout   = 10 * time.Minute // one side of one round
	stopTimeout  = 30 * time.Second // a projector's graceful stop
)

var nativeSource = store.Source{Table: "public.events", Columns: store.NativeColumns, Ordering: store.OrderXID8}

// Goroutines run under these pprof labels, so one CPU profile of a run
// splits by side: go tool pprof -tagfocus side=projectord.
var (
	labelPGX        = pprof.Labels("side", "pgx")
	labelProjectord = pprof.Labels("side", "projectord")
	labelWriters    = pprof.Labels("side", "writers")
)

// benchDB is one benchmark's database.
type benchDB struct {
	url  string
	pool *pgxpool.Pool
	log  *zap.Logger
}

// newBenchDB clones the template into a new database. Its pool has the
// daemon's default size (database.max_conns = 8); the baseline and
// projectord both use it.
func newBenchDB(b *testing.B) *benchDB {
	b.Helper()
	url := pgtest.NewDatabase(b)
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	pc.MaxConns = int32(config.Default().Database.MaxConns)
	pool, err := pgxpool.NewWithConfig(b.Context(), pc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	var v string
	if err := pool.QueryRow(b.Context(), `SELECT 'PostgreSQL ' || current_setting('server_version')`).Scan(&v); err != nil {
		b.Fatal(err)
	}
	summary.setPGVersion(v)
	return &benchDB{url: url, pool: pool, log: zaptest.NewLogger(b, zaptest.Level(zap.WarnLevel))}
}

func (db *benchDB) exec(b *testing.B, sql string, args ...any) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
	defer cancel()
	if _, err := db.pool.Exec(ctx, sql, args...); err != nil {
		b.Fatalf("%v\n%s", err, sql)
	}
}

// loadOrders appends the events of orders 1..n: per order an OrderPlaced,
// 1 to 5 ItemAdded (some for the same SKU) and, for 9 orders in 10, an
// OrderShipped as the last event, 3 to 7 events per order and exactly 5 on
// average when n is a multiple of 5. The events of 500 orders at a time
// interleave, as concurrent orders' events do. Every 1/txs of the orders
// goes in its own transaction, so the xids differ. It returns the cursor of
// the last event.
func (db *benchDB) loadOrders(b *testing.B, n, txs int) (last store.Cursor, events int) {
	b.Helper()
	per := (n + txs - 1) / txs
	for lo := 1; lo <= n; lo += per {
		hi := min(lo+per-1, n)
		db.exec(b, `INSERT INTO events (stream_id, stream_version, event_type, data, metadata, created_at)
			SELECT 'order-' || o, s,
				CASE WHEN s = 1 THEN 'OrderPlaced'
				     WHEN s = len AND o % 10 <> 0 THEN 'OrderShipped'
				     ELSE 'ItemAdded' END,
				CASE WHEN s = 1 THEN jsonb_build_object('order_id', 'order-' || o, 'customer', 'customer-' || (o % 997),
				                                        'channel', (ARRAY['web', 'app', 'store'])[1 + o % 3])
				     WHEN s = len AND o % 10 <> 0 THEN jsonb_build_object('order_id', 'order-' || o, 'carrier', 'dhl',
				                                        'tracking', md5(o::text))
				     ELSE jsonb_build_object('order_id', 'order-' || o, 'sku', 'sku-' || ((o * 31 + s * 17) % 6),
				                             'qty', 1 + (o + s) % 4, 'price', round(1 + ((o * 13 + s * 7) % 5000) / 100.0, 2)) END,
				jsonb_build_object('correlation_id', md5('c' || o), 'user', 'user-' || (o % 101)),
				timestamptz '2025-01-01 00:00:00+00' + o * interval '1 second' + s * interval '1 millisecond'
			FROM (SELECT o, 3 + (o * 7) % 5 AS len FROM generate_series($1::int, $2::int) o) orders,
				generate_series(1, len) s
			ORDER BY o / 500, s, o`, lo, hi)
	}
	db.exec(b, `VACUUM ANALYZE events`)
	ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
	defer cancel()
	if _, err := db.pool.Exec(ctx, `CHECKPOINT`); err != nil {
		b.Logf("CHECKPOINT skipped: %v", err) // needs superuser or pg_checkpoint
	}
	err := db.pool.QueryRow(ctx, `SELECT transaction_id, global_position, (SELECT count(*) FROM events)
		FROM events ORDER BY transaction_id DESC, global_position DESC LIMIT 1`).Scan(&last.XID, &last.Position, &events)
	if err != nil {
		b.Fatal(err)
	}
	return last, events
}

// eventColumns are the columns both sides read, in store.Event order.
const eventColumns = `transaction_id, global_position, stream_id, stream_version, event_type, data, metadata, created_at`

// keysetSQL is the baseline's read: plain keyset pagination.
const keysetSQL = `SELECT ` + eventColumns + ` FROM events
	WHERE (transaction_id, global_position) > ($1, $2)
	ORDER BY transaction_id, global_position LIMIT $3`

// readBatch is the baseline's read of one batch into buf[:0].
func readBatch(ctx context.Context, pool *pgxpool.Pool, after store.Cursor, limit int, buf []store.Event) ([]store.Event, error) {
	rows, err := pool.Query(ctx, keysetSQL, after.XID, after.Position, limit)
	if err != nil {
		return buf[:0], err
	}
	defer rows.Close()
	out := buf[:0]
	for rows.Next() {
		out = append(out, store.Event{})
		e := &out[len(out)-1]
		if err := rows.Scan(&e.XID, &e.Position, &e.StreamID, &e.StreamVersion, &e.Type, &e.Data, &e.Metadata, &e.CreatedAt); err != nil {
			return out[:0], err
		}
	}
	return out, rows.Err()
}

// projectord is the system under test: a PGBackend wired as the daemon
// wires it (reader, watcher, coordination session, targets), wrapped to
// time reads and commits and to see each commit.
type projectord struct {
	backend *timedBackend
	watcher *runner.Watcher
	session *coord.Session
	log     *zap.Logger
	pool    *pgxpool.Pool
}

type projectordOptions struct {
	pollInterval time.Duration // default 50ms, the daemon's default
	listen       []string      // channels whose NOTIFY kicks the watcher
	// source, when set, is read instead of nativeSource, resolved and
	// inspected once before the first read, as the daemon does.
	source *store.Source
	node   string // the coordination node id; default "bench"
}

// startProjectord starts a watcher and a coordination session on db, as
// runner's pg_test.go backend() helper does; both stop when b ends.
func (db *benchDB) startProjectord(b *testing.B, opts projectordOptions) *projectord {
	b.Helper()
	if opts.pollInterval == 0 {
		opts.pollInterval = config.Default().Source.PollInterval
	}
	def := config.Default().Coordination
	cc, err := pgx.ParseConfig(db.url)
	if err != nil {
		b.Fatal(err)
	}
	node := cmp.Or(opts.node, "bench")
	newReader := func() *store.Reader { return store.NewReader(db.pool, nativeSource, 30*time.Second) }
	if opts.source != nil {
		src, err := opts.source.Resolve(b.Context(), db.pool)
		if err != nil {
			b.Fatal(err)
		}
		layout, err := src.Inspect(b.Context(), db.pool)
		if err != nil {
			b.Fatal(err)
		}
		newReader = func() *store.Reader { return store.NewReader(db.pool, src, 30*time.Second).WithLayout(layout) }
	}
	p := &projectord{log: db.log, pool: db.pool}
	ctx, cancel := context.WithCancel(context.WithoutCancel(b.Context()))
	watcherDone := make(chan struct{})
	pprof.Do(ctx, labelProjectord, func(ctx context.Context) {
		p.watcher = runner.NewWatcher(newReader(), opts.pollInterval, db.log.Named("watcher"))
		go func() {
			defer close(watcherDone)
			p.watcher.Run(ctx)
		}()
		p.session = coord.New(coord.Config{ConnConfig: cc, Namespace: def.LockNamespace, NodeID: node, Hostname: "bench", Version: "bench",
			HeartbeatInterval: def.HeartbeatInterval, AcquireInterval: def.AcquireInterval, LeaseTimeout: def.LeaseTimeout,
			TCPUserTimeout: def.TCPUserTimeout, KeepaliveIdle: def.KeepaliveIdle, KeepaliveInterval: def.KeepaliveInterval,
			KeepaliveCount: def.KeepaliveCount, Listen: opts.listen, OnNotify: func(string, string) { p.watcher.Kick() },
			Logger: db.log.Named("coord")})
		_ = p.session.Start(ctx)
	})
	b.Cleanup(func() {
		p.session.Stop()
		cancel()
		<-watcherDone
	})
	waitFor(b, "coordination session up", 30*time.Second, p.session.Up)
	p.backend = &timedBackend{PGBackend: runner.NewPGBackend(runner.PGBackendConfig{Node: node,
		Reader: newReader(), Watcher: p.watcher, Session: p.session})}
	return p
}

// phaseStats is where a projectord run spent its time.
type phaseStats struct {
	reads, commits   int64
	readNs, commitNs int64 // summed over calls (reads overlap commits)
}

// timedBackend wraps PGBackend to time Read and Commit and to report each
// successful commit.
type timedBackend struct {
	*runner.PGBackend

	reads, commits   atomic.Int64
	readNs, commitNs atomic.Int64
	onCommit         atomic.Pointer[func(req *store.CommitRequest, at time.Time)]
}

func (t *timedBackend) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	start := time.Now()
	events, err := t.PGBackend.Read(ctx, after, f, limit, buf)
	t.readNs.Add(int64(time.Since(start)))
	t.reads.Add(1)
	return events, err
}

func (t *timedBackend) Commit(ctx context.Context, req store.CommitRequest) error {
	start := time.Now()
	err := t.PGBackend.Commit(ctx, req)
	end := time.Now()
	t.commitNs.Add(int64(end.Sub(start)))
	t.commits.Add(1)
	if err == nil {
		if f := t.onCommit.Load(); f != nil {
			(*f)(&req, end)
		}
	}
	return err
}

func (t *timedBackend) resetStats() {
	t.reads.Store(0)
	t.commits.Store(0)
	t.readNs.Store(0)
	t.commitNs.Store(0)
}

func (t *timedBackend) stats() phaseStats {
	return phaseStats{reads: t.reads.Load(), commits: t.commits.Load(), readNs: t.readNs.Load(), commitNs: t.commitNs.Load()}
}

// running is one projector being led by runner.Run.
type running struct {
	cancel context.CancelFunc
	errc   chan error
}

// run starts runner.Run for a new projector named name with sink, from
// checkpoint zero.
func (p *projectord) run(b *testing.B, name string, batch int, sink *store.SQLSink) *running {
	b.Helper()
	p.backend.AddProjector(name, store.NewTarget(p.pool, 30*time.Second), sink)
	ctx, cancel := context.WithCancel(context.WithoutCancel(b.Context()))
	r := &running{cancel: cancel, errc: make(chan error, 1)}
	proj := runner.Projector{Name: name, BatchSize: batch, Logger: p.log.Named(name)}
	go pprof.Do(ctx, labelProjectord, func(ctx context.Context) { r.errc <- runner.Run(ctx, proj, p.backend) })
	return r
}

// stop stops the projector gracefully and fails b if it does not stop in
// time or ended with an error.
func (r *running) stop(b *testing.B) {
	b.Helper()
	r.cancel()
	select {
	case err := <-r.errc:
		if err != nil {
			b.Fatalf("projector ended with: %v", err)
		}
	case <-time.After(stopTimeout):
		b.Fatalf("projector did not stop within %s", stopTimeout)
	}
}

// catchUp runs a new projector from checkpoint zero until it commits a
// checkpoint at or past last, and returns the time from Run's start to that
// commit.
func (p *projectord) catchUp(b *testing.B, name string, batch int, sink *store.SQLSink, last store.Cursor) (time.Duration, phaseStats) {
	b.Helper()
	reached := make(chan time.Time, 1)
	hook := func(req *store.CommitRequest, at time.Time) {
		if !req.To.Less(last) {
			select {
			case reached <- at:
			default:
			}
		}
	}
	p.backend.onCommit.Store(&hook)
	defer p.backend.onCommit.Store(nil)
	p.backend.resetStats()
	start := time.Now()
	r := p.run(b, name, batch, sink)
	var took time.Duration
	select {
	case at := <-reached:
		took = at.Sub(start)
	case err := <-r.errc:
		b.Fatalf("projector %s ended before catching up: %v", name, err)
	case <-time.After(runTimeout):
		r.cancel()
		b.Fatalf("projector %s did not reach %s within %s", name, last, runTimeout)
	}
	st := p.backend.stats()
	r.stop(b)
	return took, st
}

// measureCatchUp is catchUp as a measurement: wall time up to the last
// commit, CPU up to the projector's stop.
func (p *projectord) measureCatchUp(b *testing.B, name string, batch int, sink *store.SQLSink, last store.Cursor, events int) measurement {
	b.Helper()
	var took time.Duration
	var phases phaseStats
	m, _ := measure(b.Context(), labelProjectord, func(context.Context) (int, error) {
		took, phases = p.catchUp(b, name, batch, sink, last)
		return events, nil
	})
	m.took, m.phases = took, phases
	b.Logf("%s: %d events in %s; %d reads (%s), %d commits (%s); CPU client %s, server %s", name, events, took.Round(time.Millisecond),
		phases.reads, time.Duration(phases.readNs).Round(time.Millisecond), phases.commits, time.Duration(phases.commitNs).Round(time.Millisecond),
		m.cpu.client.Round(time.Millisecond), m.cpu.server.Round(time.Millisecond))
	return m
}

var waitFor = testsupport.Until

// measurement is one side's result in one round.
type measurement struct {
	took   time.Duration
	events int
	cpu    cpuUse
	phases phaseStats // projectord only
}

func (m measurement) rate() float64 { return float64(m.events) / m.took.Seconds() }

// sideResults are one side's measurements over all rounds.
type sideResults []measurement

func (s sideResults) medianRate() float64 {
	r := make([]float64, len(s))
	for i, m := range s {
		r[i] = m.rate()
	}
	return median(r)
}

// cpuPerEvent returns the median client and server CPU microseconds per
// event, or ok=false when CPU could not be measured.
func (s sideResults) cpuPerEvent() (client, server float64, ok bool) {
	var c, sv []float64
	for _, m := range s {
		if !m.cpu.ok {
			return 0, 0, false
		}
		c = append(c, float64(m.cpu.client.Microseconds())/float64(m.events))
		sv = append(sv, float64(m.cpu.server.Microseconds())/float64(m.events))
	}
	return median(c), median(sv), len(s) > 0
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// measure runs f under label, timing it and the CPU it and the server use.
func measure(ctx context.Context, label pprof.LabelSet, f func(ctx context.Context) (int, error)) (measurement, error) {
	var m measurement
	var err error
	ctx, cancel := context.WithTimeout(ctx, runTimeout)
	defer cancel()
	pprof.Do(ctx, label, func(ctx context.Context) {
		c0 := sampleCPU()
		start := time.Now()
		m.events, err = f(ctx)
		m.took = time.Since(start)
		m.cpu = sampleCPU().since(c0)
	})
	return m, err
}

func (m measurement) foreignCores() float64 {
	if !m.cpu.foreignOK || m.took <= 0 {
		return 0
	}
	return m.cpu.foreign.Seconds() / m.took.Seconds()
}

// roundResults are both sides' measurements over the rounds kept.
type roundResults struct {
	base, proj sideResults
	run        int       // rounds run, kept or not
	noisy      bool      // too few quiet rounds: all were kept
	foreign    []float64 // other processes' load in each kept round, in cores
}

// pairedRatio is the median over the rounds of proj/base within a round:
// the two sides of a round run back to back, so this cancels slow drifts
// in machine load, and the median drops outliers.
func (r roundResults) pairedRatio() float64 {
	paired := make([]float64, len(r.base))
	for i := range paired {
		paired[i] = r.proj[i].rate() / r.base[i].rate()
	}
	return median(paired)
}

func (r roundResults) roundsNote() string {
	s := fmt.Sprintf("%d of %d", len(r.base), r.run)
	if r.noisy {
		s += " (noisy)"
	}
	return s
}

func (r roundResults) foreignNote() string {
	if len(r.foreign) == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", median(r.foreign))
}

// rounds runs both sides, alternating which goes first, until
// -bench.rounds rounds were quiet (other processes used at most
// -bench.quiet cores during both sides) or three times as many ran; with
// too few quiet rounds it keeps them all and says so.
func rounds(b *testing.B, baseName, projName string, baseline, proj func(round int) measurement) roundResults {
	b.Helper()
	want := max(*flagRounds, 1)
	var all, quiet roundResults
	for r := 0; len(quiet.base) < want && r < 3*want; r++ {
		var bm, pm measurement
		if r%2 == 0 {
			bm = baseline(r)
			pm = proj(r)
		} else {
			pm = proj(r)
			bm = baseline(r)
		}
		foreign := max(bm.foreignCores(), pm.foreignCores())
		ok := !bm.cpu.foreignOK || foreign <= *flagQuiet
		b.Logf("round %d: %s %.0f/s (CPU client %s, server %s), %s %.0f/s (CPU client %s, server %s); other processes %.2f cores%s", r,
			baseName, bm.rate(), bm.cpu.client.Round(time.Millisecond), bm.cpu.server.Round(time.Millisecond),
			projName, pm.rate(), pm.cpu.client.Round(time.Millisecond), pm.cpu.server.Round(time.Millisecond),
			foreign, map[bool]string{true: "", false: ": noisy, not kept"}[ok])
		for _, rr := range []*roundResults{&all, &quiet} {
			if rr == &quiet && !ok {
				continue
			}
			rr.base, rr.proj = append(rr.base, bm), append(rr.proj, pm)
			if bm.cpu.foreignOK {
				rr.foreign = append(rr.foreign, foreign)
			}
		}
		all.run, quiet.run = r+1, r+1
	}
	if len(quiet.base) < want {
		all.noisy = true
		return all
	}
	return quiet
}

const ratioTitle = "Catch-up throughput, projectord vs plain pgx"

// reportRatio reports metrics on b and adds the summary rows.
func reportRatio(b *testing.B, bench, variant string, batch int, target float64, res roundResults) {
	b.Helper()
	pgxRes, projRes := res.base, res.proj
	pgxRate, projRate := pgxRes.medianRate(), projRes.medianRate()
	ratio := res.pairedRatio()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(pgxRate, "pgx_events/s")
	b.ReportMetric(projRate, "projectord_events/s")
	b.ReportMetric(ratio, "ratio_vs_pgx")
	verdict := "meets"
	if ratio < target {
		verdict = "**misses**"
	}
	summary.add(ratioTitle,
		"Events per second, median over the rounds kept. Ratio = median over the rounds of projectord/pgx within the round "+
			"(the two sides of a round run back to back, alternating which goes first). Both sides process the same rows with the same batch size. "+
			"A round is kept when other processes on the machine used at most -bench.quiet cores during it; \"other load\" is their median use in the rounds kept.",
		[]string{"benchmark", "batch", "events", "pgx events/s", "projectord events/s", "ratio", "target", "verdict", "rounds kept", "other load (cores)"},
		bench+" "+variant, fmt.Sprint(batch), fmt.Sprint(pgxRes[0].events), fmt.Sprintf("%.0f", pgxRate), fmt.Sprintf("%.0f", projRate),
		fmt.Sprintf("%.2f", ratio), fmt.Sprintf("≥ %.2f", target), verdict, res.roundsNote(), res.foreignNote())

	pc, ps, pok := pgxRes.cpuPerEvent()
	jc, js, jok := projRes.cpuPerEvent()
	cpu := func(ok bool, v float64) string {
		if !ok {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", v)
	}
	var readShare, commitShare, overlap []float64
	for _, m := range projRes {
		wall := float64(m.took)
		readShare = append(readShare, float64(m.phases.readNs)/wall)
		commitShare = append(commitShare, float64(m.phases.commitNs)/wall)
		overlap = append(overlap, (float64(m.phases.readNs+m.phases.commitNs)-wall)/wall)
	}
	cpuRatio := "n/a"
	if pok && jok && jc+js > 0 {
		cpuRatio = fmt.Sprintf("%.2f", (pc+ps)/(jc+js))
		b.ReportMetric((pc+ps)/(jc+js), "cpu_ratio_vs_pgx")
	}
	summary.add("Where the time goes",
		"CPU µs per event (median): client = this Go process, server = all processes of the PostgreSQL cluster. "+
			"CPU ratio = pgx CPU per event / projectord CPU per event (client+server; steadier than wall time on a busy machine, ≥ 1 means projectord is cheaper). "+
			"For projectord, time inside Read and Commit as a share of wall time; read+commit above 100% means reads overlapped commits.",
		[]string{"benchmark", "batch", "pgx client µs/ev", "pgx server µs/ev", "projectord client µs/ev", "projectord server µs/ev",
			"CPU ratio", "projectord in Read", "projectord in Commit", "read/commit overlap"},
		bench+" "+variant, fmt.Sprint(batch), cpu(pok, pc), cpu(pok, ps), cpu(jok, jc), cpu(jok, js), cpuRatio,
		fmt.Sprintf("%.0f%%", 100*median(readShare)), fmt.Sprintf("%.0f%%", 100*median(commitShare)),
		fmt.Sprintf("%.0f%%", 100*median(overlap)))
}
