package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

// pgBundle is one test database with an events table and a read model
// `applied` that records every application of every event.
type pgBundle struct {
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
	log  *zap.Logger
}

func setupPG(t *testing.T) *pgBundle {
	t.Helper()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(t.Context(), `CREATE TABLE applied (projector text NOT NULL, position bigint NOT NULL, node text)`)
	require.NoError(t, err)
	return &pgBundle{ctx: t.Context(), url: url, pool: pool, log: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))}
}

// appendEvents commits n events of type typ, in one transaction per `per` events.
func (tb *pgBundle) appendEvents(t *testing.T, n, per int, typ string) {
	t.Helper()
	for i := 0; i < n; i += per {
		rows := min(per, n-i)
		_, err := tb.pool.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
			SELECT $4 || g, 1, $2, jsonb_build_object('n', g) FROM generate_series($1::bigint, $1::bigint + $3 - 1) g`,
			int64(i), typ, rows, fmt.Sprintf("stream-%d-", streamSeq.Add(1)))
		require.NoError(t, err)
	}
}

// sinkSQL records each application with the applying node in metadata-free form.
func recordHandler(projector string) map[string]string {
	return map[string]string{"*": fmt.Sprintf(`INSERT INTO applied (projector, position) VALUES ('%s', @position)`, projector)}
}

// checkExactlyOnce compares the read model with the oracle: every committed
// event of the given types applied exactly once, nothing else.
func (tb *pgBundle) checkExactlyOnce(t *testing.T, projector string, types ...string) int {
	t.Helper()
	var missing, extra, dup, total int
	err := tb.pool.QueryRow(tb.ctx, `
		WITH want AS (SELECT global_position AS position FROM events WHERE coalesce(cardinality($2::text[]), 0) = 0 OR event_type = ANY($2)),
		     got AS (SELECT position, count(*) AS n FROM applied WHERE projector = $1 GROUP BY position)
		SELECT (SELECT count(*) FROM want WHERE position NOT IN (SELECT position FROM got)),
		       (SELECT count(*) FROM got WHERE position NOT IN (SELECT position FROM want)),
		       (SELECT count(*) FROM got WHERE n > 1),
		       (SELECT count(*) FROM want)`, projector, types).Scan(&missing, &extra, &dup, &total)
	require.NoError(t, err)
	require.Zero(t, missing, "events never applied")
	require.Zero(t, extra, "events applied that should not have been")
	require.Zero(t, dup, "events applied more than once")
	return total
}

// config returns a daemon config on tb's database.
func (tb *pgBundle) config(t *testing.T, projectors ...config.Projector) *config.Config {
	t.Helper()
	c := config.Default()
	c.Database.URL = tb.url
	c.Coordination.AcquireInterval = 100 * time.Millisecond
	c.Coordination.HeartbeatInterval = 200 * time.Millisecond
	c.Coordination.LeaseTimeout = 3 * time.Second
	c.Source.PollInterval = 10 * time.Millisecond
	for i := range projectors {
		p := &projectors[i]
		if p.BatchSize == 0 {
			p.BatchSize = 100
		}
		if p.OnError.Then == "" {
			p.OnError = config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: "halt"}
		}
		if p.Sink.SQL == nil {
			p.Sink.SQL = &config.SQLSink{Handlers: recordHandler(p.Name)}
		}
	}
	c.Projectors = projectors
	return &c
}

func (tb *pgBundle) startDaemon(t *testing.T, cfg *config.Config, node string) *Daemon {
	t.Helper()
	return tb.startDaemonWith(t, cfg, node, nil)
}

// startDaemonWith is startDaemon with options set by opt (if not nil).
func (tb *pgBundle) startDaemonWith(t *testing.T, cfg *config.Config, node string, opt func(*Options)) *Daemon {
	t.Helper()
	c := *cfg
	c.Coordination.NodeID = node
	sig := &testSignals{}
	sig.state.Init()
	o := Options{Config: &c, Logger: tb.log.Named(node), Version: "test", Migrate: true, signals: sig}
	if opt != nil {
		opt(&o)
	}
	d := New(o)
	require.NoError(t, d.Start(tb.ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Stop(ctx)
	})
	return d
}

func (tb *pgBundle) checkpoint(t *testing.T, projector string) store.Checkpoint {
	t.Helper()
	c, _, err := store.NewTarget(tb.pool, 5*time.Second).Load(tb.ctx, projector)
	require.NoError(t, err)
	return c
}

// peek loads a checkpoint without failing the test: for polled conditions,
// which testify may still run on its own goroutine after the wait is over.
func (tb *pgBundle) peek(projector string) store.Checkpoint {
	c, _, _ := store.NewTarget(tb.pool, 5*time.Second).Load(context.Background(), projector)
	return c
}

// lastEvent is the cursor of the newest committed event, regardless of the
// horizon: other tests' open transactions share this cluster's horizon, so
// the reader's head can trail it for a while; a caught-up projector ends
// exactly here.
func (tb *pgBundle) lastEvent(t *testing.T) store.Cursor {
	t.Helper()
	var c store.Cursor
	err := tb.pool.QueryRow(tb.ctx, `SELECT transaction_id, global_position FROM events ORDER BY 1 DESC, 2 DESC LIMIT 1`).Scan(&c.XID, &c.Position)
	require.NoError(t, err)
	return c
}

func (tb *pgBundle) waitCaughtUp(t *testing.T, projectors ...string) {
	t.Helper()
	want := tb.lastEvent(t)
	for _, p := range projectors {
		// A bound for a stuck projector, not a speed target: catching up
		// tens of thousands of events under -race on a loaded 2-core
		// machine takes tens of seconds.
		require.Eventually(t, func() bool { return tb.peek(p).Cursor == want }, 2*time.Minute, 5*time.Millisecond,
			"projector %s never reached %s", p, want)
	}
}

func leaders(ds []*Daemon, projector string) []string {
	var out []string
	for _, d := range ds {
		if d.States()[projector] == runner.StateLeader {
			out = append(out, d.Node())
		}
	}
	return out
}

func TestPGTwoDaemonsOneLeaderEachAndHandover(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 2000, 250, "A")
	cfg := tb.config(t, config.Projector{Name: "alpha"}, config.Projector{Name: "beta"}, config.Projector{Name: "gamma", EventTypes: []string{"B"}})
	a := tb.startDaemon(t, cfg, "node-a")
	b := tb.startDaemon(t, cfg, "node-b")
	ds := []*Daemon{a, b}
	tb.waitCaughtUp(t, "alpha", "beta", "gamma")
	for _, p := range []string{"alpha", "beta", "gamma"} {
		require.Eventually(t, func() bool { return len(leaders(ds, p)) == 1 }, 5*time.Second, 5*time.Millisecond)
		require.Len(t, leaders(ds, p), 1, "exactly one leader for %s", p)
	}
	// Stop whichever daemon leads alpha; the other takes every projector.
	leader, other := a, b
	if leaders(ds, "alpha")[0] == "node-b" {
		leader, other = b, a
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	leader.Stop(ctx)
	cancel()
	tb.appendEvents(t, 500, 50, "B")
	tb.waitCaughtUp(t, "alpha", "beta", "gamma")
	for _, p := range []string{"alpha", "beta", "gamma"} {
		require.Equal(t, []string{other.Node()}, leaders([]*Daemon{other}, p))
		require.Equal(t, other.Node(), tb.checkpoint(t, p).LeaderNode)
	}
	require.Equal(t, 2500, tb.checkExactlyOnce(t, "alpha"))
	require.Equal(t, 2500, tb.checkExactlyOnce(t, "beta"))
	require.Equal(t, 500, tb.checkExactlyOnce(t, "gamma", "B"))
}

func TestPGGapSafetyUnderConcurrentWriters(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	cfg := tb.config(t, config.Projector{Name: "gap", BatchSize: 500})
	tb.startDaemon(t, cfg, "node-a")

	const writers, total, perTx = 16, 50_000, 40
	wpool, err := pgxpool.NewWithConfig(tb.ctx, func() *pgxpool.Config {
		c, _ := pgxpool.ParseConfig(tb.url)
		c.MaxConns = writers
		return c
	}())
	require.NoError(t, err)
	defer wpool.Close()
	var mu sync.Mutex
	committed, rolledBack := 0, 0
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			for {
				mu.Lock()
				if committed >= total {
					mu.Unlock()
					return
				}
				mu.Unlock()
				err := pgx.BeginFunc(tb.ctx, wpool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
						SELECT $1 || '-' || g, g, 'A', '{}' FROM generate_series(1, $2) g`, fmt.Sprintf("w%d-%d", w, rng.Int64()), perTx); err != nil {
						return err
					}
					// Hold the transaction open after its insert, as a slow writer does.
					time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond)
					if rng.IntN(10) == 0 {
						return errRollback
					}
					return nil
				})
				mu.Lock()
				if err == nil {
					committed += perTx
				} else {
					rolledBack += perTx
				}
				mu.Unlock()
				if err != nil && !errors.Is(err, errRollback) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	require.Positive(t, rolledBack)
	tb.waitCaughtUp(t, "gap")
	n := tb.checkExactlyOnce(t, "gap")
	require.Equal(t, committed, n)
	t.Logf("%d events committed by %d writers, %d rolled back; all committed applied exactly once", committed, writers, rolledBack)
}

var errRollback = fmt.Errorf("deliberate rollback")

// streamSeq keeps appendEvents' stream ids unique across calls.
var streamSeq atomic.Int64

func TestPGResumeAfterRestartAppliesNothingTwice(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 3000, 500, "A")
	cfg := tb.config(t, config.Projector{Name: "resume", BatchSize: 50})
	d := tb.startDaemon(t, cfg, "node-a")
	require.Eventually(t, func() bool { return tb.peek("resume").EventsApplied >= 500 }, 30*time.Second, time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	d.Stop(ctx)
	cancel()
	stopped := tb.checkpoint(t, "resume")
	require.Less(t, stopped.EventsApplied, int64(3000), "stopped mid catch-up")
	var applied int64
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM applied`).Scan(&applied))
	require.Equal(t, stopped.EventsApplied, applied, "the read model matches the checkpoint exactly")

	tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "resume")
	require.Equal(t, 3000, tb.checkExactlyOnce(t, "resume"))
	require.Greater(t, tb.checkpoint(t, "resume").Epoch, stopped.Epoch)
}

func TestPGPoisonPoliciesIsolateProjectors(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE nums (projector text, n int)`)
	require.NoError(t, err)
	tb.appendEvents(t, 20, 20, "A")
	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('poison', 1, 'A', '{"n":"not a number"}')`)
	require.NoError(t, err)
	tb.appendEvents(t, 20, 20, "A")

	handler := func(p string) *config.SQLSink {
		return &config.SQLSink{Handlers: map[string]string{"A": fmt.Sprintf(`INSERT INTO nums VALUES ('%s', (@data->>'n')::int)`, p)}}
	}
	policy := func(then string) config.ErrorPolicy {
		return config.ErrorPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.Then(then)}
	}
	cfg := tb.config(t,
		config.Projector{Name: "halts", OnError: policy("halt"), Sink: config.Sink{SQL: handler("halts")}},
		config.Projector{Name: "skips", OnError: policy("skip"), Sink: config.Sink{SQL: handler("skips")}},
		config.Projector{Name: "letters", OnError: policy("dead_letter"), Sink: config.Sink{SQL: handler("letters")}},
		config.Projector{Name: "healthy"},
	)
	d := tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "skips", "letters", "healthy")
	waitState(t, d, "halts", runner.StateHalted)

	count := func(p string) (n int) {
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM nums WHERE projector = $1`, p).Scan(&n))
		return n
	}
	require.Equal(t, 20, count("halts"), "halted just before the poison event")
	require.Equal(t, 40, count("skips"))
	require.Equal(t, 40, count("letters"))
	require.Equal(t, 41, tb.checkExactlyOnce(t, "healthy"))

	h := tb.checkpoint(t, "halts")
	require.Equal(t, store.StatusHalted, h.Status)
	require.Contains(t, h.LastError, "invalid input syntax")
	require.Contains(t, tb.checkpoint(t, "skips").LastError, "skipped")
	var dl int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM projectord.dead_letters WHERE projector = 'letters' AND stream_id = 'poison' AND attempts = 3`).Scan(&dl))
	require.Equal(t, 1, dl)
}

// slowCommit is a backend whose commits ignore cancellation, like a leader
// that has not yet noticed it lost its lock, and that reports when a
// commit starts.
type slowCommit struct {
	*runner.PGBackend
	started chan struct{}
	once    sync.Once
}

func (s *slowCommit) Commit(ctx context.Context, req store.CommitRequest) error {
	if len(req.Events) > 0 {
		s.once.Do(func() { close(s.started) })
	}
	return s.PGBackend.Commit(context.WithoutCancel(ctx), req)
}

func TestPGLeaderCutOffMidBatchCannotCommit(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 10, 10, "A")
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('slow', 1, 'Slow', '{}')`)
	require.NoError(t, err)
	cfg := tb.config(t, config.Projector{Name: "fenced", Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{
		"A":    `INSERT INTO applied (projector, position) VALUES ('fenced', @position)`,
		"Slow": `INSERT INTO applied (projector, position) SELECT 'fenced', @position FROM pg_sleep(1)`,
	}}}})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)

	a := tb.backend(t, cfg, "node-a")
	slowA := &slowCommit{PGBackend: a, started: make(chan struct{})}
	doneA := make(chan error, 1)
	go func() { doneA <- runner.Run(tb.ctx, p, slowA) }()
	select {
	case <-slowA.started:
	case <-time.After(10 * time.Second):
		t.Fatal("leader A never started committing")
	}
	// Cut A off: its coordination backend dies, its lock with it.
	_, err = tb.pool.Exec(tb.ctx, `SELECT pg_terminate_backend($1)`, int(a.Session.PID()))
	require.NoError(t, err)

	b := tb.backend(t, cfg, "node-b")
	ctxB, stopB := context.WithCancel(tb.ctx)
	defer stopB()
	doneB := make(chan error, 1)
	go func() {
		for {
			err := runner.Run(ctxB, p, b)
			if err == nil || ctxB.Err() != nil {
				doneB <- err
				return
			}
			select {
			case <-b.Turn():
			case <-ctxB.Done():
			}
		}
	}()
	errA := <-doneA
	require.Error(t, errA)
	require.True(t, errorsIsAny(errA, runner.ErrDeposed, runner.ErrLeaseLost), "A stops because it was deposed or lost its lease: %v", errA)
	tb.waitCaughtUp(t, "fenced")
	c := tb.checkpoint(t, "fenced")
	require.Equal(t, "node-b", c.LeaderNode)
	require.Equal(t, 11, tb.checkExactlyOnce(t, "fenced"))
	stopB()
	require.NoError(t, <-doneB)
}

// backend builds a bare PGBackend (no daemon) for node on tb's database.
func (tb *pgBundle) backend(t *testing.T, cfg *config.Config, node string) *runner.PGBackend {
	t.Helper()
	src := SourceOf(cfg.Source)
	cc, err := pgx.ParseConfig(tb.url)
	require.NoError(t, err)
	reader := store.NewReader(tb.pool, src, 5*time.Second)
	w := runner.NewWatcher(reader, 10*time.Millisecond, tb.log)
	ctx, cancel := context.WithCancel(tb.ctx)
	go w.Run(ctx)
	s := coord.New(coord.Config{ConnConfig: cc, Namespace: 7, NodeID: node, Hostname: "test", Version: "test",
		HeartbeatInterval: 100 * time.Millisecond, AcquireInterval: 100 * time.Millisecond, LeaseTimeout: 3 * time.Second,
		Logger: tb.log.Named(node)})
	require.NoError(t, s.Start(ctx))
	t.Cleanup(func() { s.Stop(); cancel() })
	require.Eventually(t, s.Up, 10*time.Second, time.Millisecond)
	b := runner.NewPGBackend(runner.PGBackendConfig{Node: node, Reader: reader, Watcher: w, Session: s})
	for _, p := range cfg.Projectors {
		sink, err := store.CompileSQLSink(p.Sink.SQL.Handlers, p.Sink.SQL.Reset)
		require.NoError(t, err)
		b.AddProjector(p.Name, store.NewTarget(tb.pool, 30*time.Second), sink)
	}
	return b
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// listeningLeader starts a replica with source.listen and a one-minute
// poll leading projector name, with one event applied: from here, only a
// NOTIFY (or the chase after one) can bring the next events in time.
func listeningLeader(t *testing.T, tb *pgBundle, name string) *Daemon {
	t.Helper()
	src := store.Source{Table: "public.events", Columns: store.NativeColumns}
	for _, step := range store.PrepareSQL(src, true, "projectord_events") {
		_, err := tb.pool.Exec(tb.ctx, step.SQL)
		require.NoError(t, err)
	}
	cfg := tb.config(t, config.Projector{Name: name})
	cfg.Source.Listen = true
	cfg.Source.PollInterval = time.Minute // only the NOTIFY can wake it in time
	d := tb.startDaemon(t, cfg, "node-a")
	waitState(t, d, name, runner.StateLeader)
	tb.appendEvents(t, 1, 1, "A")
	tb.waitCaughtUp(t, name)
	return d
}

func TestPGNotifyWakesProjectorBeforeThePoll(t *testing.T) {
	// Not parallel: the NOTIFY arrives at commit, but the event is readable
	// only once no older transaction anywhere in the cluster holds the
	// horizon back; another test's open transaction would leave it to the
	// (here one-minute) poll, which is exactly why polling stays the truth.
	tb := setupPG(t)
	listeningLeader(t, tb, "woken")
	tb.appendEvents(t, 3, 3, "A")
	start := time.Now()
	tb.waitCaughtUp(t, "woken")
	require.Less(t, time.Since(start), 10*time.Second)
	require.Equal(t, 4, tb.checkExactlyOnce(t, "woken"))
}

// TestPGNotifyHeldByTheHorizonIsChased: when the NOTIFY arrives while an
// older transaction holds the horizon below the events it announced, the
// poll it causes cannot read them yet, and nothing notifies when the
// holder ends. The watcher chases them with early polls (Watcher.Run), so
// the projector is as late as the holder, not a poll interval (a minute
// here). Not parallel, like the test above: the horizon is the cluster's.
func TestPGNotifyHeldByTheHorizonIsChased(t *testing.T) {
	tb := setupPG(t)
	listeningLeader(t, tb, "chased")

	holder, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(context.Background()) }()
	var xid string
	require.NoError(t, holder.QueryRow(tb.ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid)) // holds the horizon from here
	tb.appendEvents(t, 3, 3, "A")                                                               // commits and notifies
	time.Sleep(200 * time.Millisecond)                                                          // how long the horizon is held, not a synchronisation
	require.NoError(t, holder.Commit(tb.ctx))
	start := time.Now()
	tb.waitCaughtUp(t, "chased")
	require.Less(t, time.Since(start), 10*time.Second, "the events held by the horizon waited for the poll interval")
	require.Equal(t, 4, tb.checkExactlyOnce(t, "chased"))
}

func TestPGTargetDatabaseHoldsReadModelAndCheckpoint(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	targetURL := pgtest.NewDatabase(t)
	target, err := pgxpool.New(tb.ctx, targetURL)
	require.NoError(t, err)
	defer target.Close()
	_, err = target.Exec(tb.ctx, `CREATE TABLE remote (position bigint PRIMARY KEY, stream text)`)
	require.NoError(t, err)
	tb.appendEvents(t, 300, 100, "A")
	cfg := tb.config(t, config.Projector{Name: "remote", Sink: config.Sink{SQL: &config.SQLSink{
		TargetURL: targetURL,
		Handlers:  map[string]string{"A": `INSERT INTO remote VALUES (@position, @stream_id)`},
	}}})
	tb.startDaemon(t, cfg, "node-a")
	want := tb.lastEvent(t)
	remote := store.NewTarget(target, 5*time.Second)
	require.Eventually(t, func() bool {
		c, ok, err := remote.Load(tb.ctx, "remote")
		return err == nil && ok && c.Cursor == want
	}, 30*time.Second, 5*time.Millisecond)
	var n int
	require.NoError(t, target.QueryRow(tb.ctx, `SELECT count(*) FROM remote`).Scan(&n))
	require.Equal(t, 300, n)
	_, ok, err := store.NewTarget(tb.pool, time.Second).Load(tb.ctx, "remote")
	require.NoError(t, err)
	require.False(t, ok, "the checkpoint lives beside the read model, not in the source")
}

func TestPGResetReplaysIntoEmptiedReadModel(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE rm (position bigint PRIMARY KEY)`)
	require.NoError(t, err)
	tb.appendEvents(t, 200, 100, "A")
	cfg := tb.config(t, config.Projector{Name: "rebuilt", Sink: config.Sink{SQL: &config.SQLSink{
		Handlers: map[string]string{"A": `INSERT INTO rm VALUES (@position)`},
		Reset:    `TRUNCATE rm`,
	}}})
	tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "rebuilt")
	before := tb.checkpoint(t, "rebuilt")

	epoch, err := store.NewTarget(tb.pool, 5*time.Second).Reset(tb.ctx, "rebuilt", "TRUNCATE rm")
	require.NoError(t, err)
	require.Greater(t, epoch, before.Epoch)
	// No new event arrives: only the reset notification can restart the idle leader.
	last := tb.lastEvent(t)
	require.Eventually(t, func() bool {
		c := tb.peek("rebuilt")
		return c.Epoch > epoch && c.EventsApplied == 200 && c.Cursor == last
	}, 30*time.Second, 5*time.Millisecond)
	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm`).Scan(&n))
	require.Equal(t, 200, n)
}

func TestPGEventsWithoutHandlerArePassedOver(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 450, 150, "B")
	tb.appendEvents(t, 10, 10, "A")
	tb.appendEvents(t, 250, 250, "B")
	cfg := tb.config(t, config.Projector{Name: "onlya", BatchSize: 100, Sink: config.Sink{SQL: &config.SQLSink{
		Handlers: map[string]string{"A": `INSERT INTO applied (projector, position) VALUES ('onlya', @position)`},
	}}})
	tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "onlya")
	require.Equal(t, 10, tb.checkExactlyOnce(t, "onlya", "A"))
	require.Equal(t, int64(10), tb.checkpoint(t, "onlya").EventsApplied, "only events a handler ran for count as applied")
}

func TestPGDatabaseErrorsAreNotBlamedOnEvents(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	// A read model that fails as a read-only database would (SQLSTATE
	// 25006) until the flag is cleared: not the events' fault.
	_, err := tb.pool.Exec(tb.ctx, `
		CREATE TABLE rm (position bigint PRIMARY KEY);
		CREATE TABLE outage (on_ boolean NOT NULL);
		INSERT INTO outage VALUES (true);
		CREATE FUNCTION rm_guard() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT on_ FROM outage) THEN
				RAISE EXCEPTION 'cannot execute INSERT in a read-only transaction' USING ERRCODE = 'read_only_sql_transaction';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER rm_guard BEFORE INSERT ON rm FOR EACH ROW EXECUTE FUNCTION rm_guard();`)
	require.NoError(t, err)
	tb.appendEvents(t, 20, 20, "A")
	cfg := tb.config(t, config.Projector{Name: "ro", OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 20 * time.Millisecond, Then: "skip"},
		Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": `INSERT INTO rm VALUES (@position)`}}}})
	d := tb.startDaemon(t, cfg, "node-a")
	waitState(t, d, "ro", runner.StateLeader)
	// Far more failures than max_attempts, yet nothing may be skipped.
	require.Never(t, func() bool { return tb.peek("ro").Cursor.Position > 0 }, 500*time.Millisecond, 10*time.Millisecond)
	// ... but the retrying is visible.
	require.Eventually(t, func() bool { return strings.HasPrefix(tb.peek("ro").LastError, "retrying: ") }, 10*time.Second, 5*time.Millisecond)
	require.Contains(t, tb.checkpoint(t, "ro").LastError, "read-only transaction (SQLSTATE 25006)")
	_, err = tb.pool.Exec(tb.ctx, `UPDATE outage SET on_ = false`)
	require.NoError(t, err)
	tb.waitCaughtUp(t, "ro")
	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm`).Scan(&n))
	require.Equal(t, 20, n, "nothing skipped")
	// Cleared by a write of its own, just after the batch commits.
	require.Eventually(t, func() bool { return tb.peek("ro").LastError == "" }, 10*time.Second, 5*time.Millisecond,
		"last_error still reports a retry that is over")
}

func TestPGClaimRefusesASwappedSourceCluster(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	cfg := tb.config(t, config.Projector{Name: "swap"})
	b := tb.backend(t, cfg, "node-a")
	real, err := store.SystemIdentifier(tb.ctx, tb.pool)
	require.NoError(t, err)
	require.NotZero(t, real)
	b.SourceID = real
	_, err = b.Claim(tb.ctx, "swap")
	require.NoError(t, err)

	// As if projectord had started against another cluster behind this URL.
	b.SourceID = real + 1
	_, err = b.Claim(tb.ctx, "swap")
	require.ErrorIs(t, err, store.ErrClusterChanged)
	// The supervisor ends with it, as its cause for the daemon to stop.
	told := runner.NewSupervisor(ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil), b).Run(tb.ctx)
	require.ErrorIs(t, told, store.ErrClusterChanged)
}

// start runs runner.Run in the background and returns its result channel.
func start(ctx context.Context, p runner.Projector, b runner.Backend) <-chan error {
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx, p, b) }()
	return done
}

// waitState waits for the supervisor of projector on d to enter state (a
// test signal: no polling of the supervisor).
func waitState(t *testing.T, d *Daemon, projector string, state runner.State) {
	t.Helper()
	d.opts.signals.state.WaitFor(t, 30*time.Second, fmt.Sprintf("%s %s", projector, state), func(c stateChange) bool {
		return c.projector == projector && c.state == state
	})
}
