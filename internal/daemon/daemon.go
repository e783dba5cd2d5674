package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/httpsink"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsignal"
)

// Options configure a Daemon. Config and Logger are required.
type Options struct {
	Config  *config.Config
	Logger  *zap.Logger
	Version string
	// Migrate applies schema migrations on start; otherwise the schema
	// version is only checked.
	Migrate  bool
	Observer runner.Observer
	// OnSessionLost is called, with one of coord.LossReasons, each time the
	// coordination session is lost (not stopped); it must not block.
	OnSessionLost func(reason string)
	// OnSourceIndexed, when set, is called once the source is checked at
	// start: false when the table has no cursor index and
	// source.allow_unindexed let the daemon run anyway.
	OnSourceIndexed func(indexed bool)
	// ObserveRead, when set, is told what each projector's read did:
	// served from the shared window, a read of its own, or a shared read
	// extending the window (source.shared_reads). It must not block.
	ObserveRead func(runner.TailRead)
	// OnCommit, when set, is called after every transaction committed for
	// batches: grouped (one transaction for that many projectors' batches,
	// database.group_commit) or not (one batch, batches is 1). It must not
	// block: commits call it.
	OnCommit func(grouped bool, batches int)
	// HTTPObserver, when set, learns of every request and retry of the
	// HTTP sinks (projectord_http_* metrics). It must not block.
	HTTPObserver httpsink.Observer

	// signals, set by tests only, records what the supervisors do.
	signals *testSignals
}

// testSignals are what a test can wait for instead of polling (testsignal).
type testSignals struct {
	// state is every supervisor state change.
	state testsignal.Log[stateChange]
}

type stateChange struct {
	projector string
	state     runner.State
}

// signalling forwards to an Observer and records state changes.
type signalling struct {
	runner.Observer
	s *testSignals
}

func (o signalling) StateChanged(p string, st runner.State) {
	o.Observer.StateChanged(p, st)
	o.s.state.Signal(stateChange{p, st})
}

// Daemon runs every configured projector of one replica.
type Daemon struct {
	opts Options
	cfg  *config.Config
	log  *zap.Logger
	node string

	mu          sync.Mutex
	source      *pgxpool.Pool
	pools       map[string]*pgxpool.Pool // target URL -> pool
	backends    *coord.PoolBackends      // every pool connection, for takeover
	backend     *runner.PGBackend
	supervisors map[string]*runner.Supervisor
	stopping    bool
	started     time.Time
	bootErr     error
	refreshLoop time.Time
	snapshot    runner.Snapshot
	// snapshotOK: the last refresh succeeded; refreshTook: how long it took.
	snapshotOK  bool
	refreshTook time.Duration
	// vrates is each version's recent progress; the refresher's alone.
	vrates map[string]versionRate

	// life ends when the daemon does, with its cause: ErrStopped after
	// Stop, or the fatal error it met (Done, Cause). The bootstrap and the
	// supervisors run on it.
	life       context.Context
	end        context.CancelCauseFunc
	hasStarted bool
	// services are the parts bootstrap started, in order; Stop stops them
	// in reverse, after the supervisors.
	services  []service
	wg        sync.WaitGroup // supervisors
	bootWG    sync.WaitGroup // bootstrap
	stopOnce  sync.Once
	startOnce sync.Once
}

// ErrStopped is the cause of a daemon's end after Stop.
var ErrStopped = errors.New("projectord stopped")

// service is one part of a running replica that Stop ends: river's
// startstop contract, reduced to what the daemon needs. Its start is part
// of bootstrap; stop returns once it has stopped.
type service struct {
	name string
	stop func()
}

// goService runs run on its own context until its stop.
func goService(name string, parent context.Context, run func(ctx context.Context)) service {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx)
	}()
	return service{name: name, stop: func() { cancel(ErrStopped); <-done }}
}

// New validates nothing and touches no database: it only prepares.
func New(opts Options) *Daemon {
	node := opts.Config.Coordination.NodeID
	if node == "" {
		node = config.DefaultNodeID()
	}
	if opts.Observer == nil {
		opts.Observer = runner.NopObserver{}
	}
	life, end := context.WithCancelCause(context.Background())
	return &Daemon{opts: opts, cfg: Keyed(opts.Config), log: opts.Logger, node: node, started: time.Now(),
		pools: map[string]*pgxpool.Pool{}, backends: coord.NewPoolBackends(),
		supervisors: map[string]*runner.Supervisor{}, life: life, end: end}
}

// Done is closed when the daemon ends: by Stop, or on a fatal error (a
// source without xid8, a schema newer than the binary, the source cluster
// changed, a checkpoint whose ordering cannot be converted). Cause says
// which; the caller then calls Stop, which stops what still runs.
func (d *Daemon) Done() <-chan struct{} { return d.life.Done() }

// Cause is why the daemon ended: ErrStopped after Stop, else the fatal
// error; nil while it runs.
func (d *Daemon) Cause() error {
	if d.life.Err() == nil {
		return nil
	}
	return context.Cause(d.life)
}

// Node is this replica's node id.
func (d *Daemon) Node() string { return d.node }

// States returns every projector's supervisor state.
func (d *Daemon) States() map[string]runner.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]runner.State{}
	for _, p := range d.cfg.Projectors {
		out[p.Name] = runner.StateStarting
		if s, ok := d.supervisors[p.Name]; ok {
			out[p.Name] = s.State()
		}
	}
	return out
}

// Backend returns the Postgres backend once bootstrapped, else nil.
func (d *Daemon) Backend() *runner.PGBackend {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.backend
}

// Pools returns the daemon's connection pools by name ("source", and
// "target:<database>" for every other sink database), for metrics.
func (d *Daemon) Pools() map[string]*pgxpool.Pool {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]*pgxpool.Pool{}
	for _, p := range d.pools {
		if p == d.source {
			out["source"] = p
			continue
		}
		out["target:"+p.Config().ConnConfig.Database] = p
	}
	return out
}

// Start begins bootstrapping in the background and returns at once: an
// unreachable database is retried with backoff and reported as not ready,
// never a crash.
func (d *Daemon) Start(ctx context.Context) error {
	d.startOnce.Do(func() {
		// Under the lock, so a Stop racing this Start either sees nothing
		// started or waits for the bootstrap.
		d.mu.Lock()
		if d.stopping {
			d.mu.Unlock()
			return
		}
		d.hasStarted = true
		d.bootWG.Add(1)
		d.mu.Unlock()
		go func() {
			defer d.bootWG.Done()
			d.bootstrap(d.life)
		}()
	})
	return nil
}

func (d *Daemon) bootstrap(ctx context.Context) {
	bo := runner.NewBackoff(250*time.Millisecond, 10*time.Second)
	for {
		err := d.connect(ctx)
		if err == nil {
			return
		}
		if errors.Is(err, store.ErrNoXID8) || errors.Is(err, store.ErrNoCursorIndex) || errors.Is(err, store.ErrUnsupportedSource) || errors.Is(err, store.ErrSchemaTooNew) || errors.Is(err, store.ErrUntrustedSchema) ||
			errors.Is(err, store.ErrLockBudget) || errors.Is(err, errFatal) {
			d.log.Error("cannot start", zap.Error(err))
			d.end(err)
			return
		}
		if ctx.Err() != nil || errors.Is(err, errStopping) {
			d.closePools()
			return
		}
		d.mu.Lock()
		d.bootErr = err
		d.mu.Unlock()
		delay := bo.Delay()
		d.log.Warn("database not ready, retrying", zap.Error(err), zap.Duration("retry_in", delay))
		if !runner.Sleep(ctx, delay) {
			return
		}
	}
}

// tailReads is the fewest extending reads the shared window holds.
const tailReads = 4

// budgetBatches is how many batches a replica holds in memory at once per
// pooled connection (runner.Budget): enough to keep every connection busy
// (one reading, one committing) and no more.
const budgetBatches = 2

var (
	errFatal    = errors.New("fatal configuration error")
	errStopping = errors.New("stopping")
)

func (d *Daemon) pool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	d.mu.Lock()
	p, ok := d.pools[url]
	d.mu.Unlock()
	if ok {
		return p, nil
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid database URL: %s", errFatal, config.RedactURL(err.Error()))
	}
	pc.MaxConns = d.cfg.Database.MaxConns
	pc.ConnConfig.ConnectTimeout = d.cfg.Database.ConnectTimeout
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "projectord " + d.node
	}
	// Registered in the node row whatever the URL says, so a standby
	// taking over from this replica reaches them; keepalives as on the
	// coordination session.
	cc := d.cfg.Coordination
	d.backends.Install(pc, coord.Keepalives{Idle: cc.KeepaliveIdle, Interval: cc.KeepaliveInterval,
		Count: cc.KeepaliveCount, UserTimeout: cc.TCPUserTimeout})
	p, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, d.cfg.Database.ConnectTimeout)
	defer cancel()
	if err := p.Ping(pctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("error connecting to %s: %w", config.RedactURL(url), err)
	}
	d.mu.Lock()
	d.pools[url] = p
	d.mu.Unlock()
	return p, nil
}

func (d *Daemon) prepareSchema(ctx context.Context, p *pgxpool.Pool) error {
	if d.opts.Migrate {
		res, err := store.Migrate(ctx, p, d.opts.Version)
		if err != nil {
			return err
		}
		if len(res.Applied) > 0 {
			d.log.Info("schema migrated", zap.Int("from", res.From), zap.Int("to", res.To), zap.Strings("applied", res.Applied))
		}
		return nil
	}
	return store.CheckSchema(ctx, p)
}

// SourceOf converts the source configuration.
func SourceOf(c config.Source) store.Source {
	return store.Source{Preset: c.Preset, Table: c.Table, Ordering: store.Ordering(c.Ordering), Columns: c.Columns}
}

// BalanceConfigOf is the balancing of a replica named node.
func BalanceConfigOf(cfg *config.Config, node string, log *zap.Logger) runner.BalanceConfig {
	weights := make(map[string]int, len(cfg.Projectors))
	for _, p := range cfg.Projectors {
		weights[p.Name] = max(p.Weight, config.DefaultWeight)
	}
	co := cfg.Coordination
	// Long enough that a handover in progress (a yield, a release NOTIFY,
	// a standby's next turn and a heartbeat's view) is never mistaken for
	// a projector nobody takes.
	grace := 2*co.AcquireInterval + co.HeartbeatInterval
	return runner.BalanceConfig{Enabled: co.Balance, Node: node, Weights: weights, Grace: grace, Cooldown: grace, Logger: log}
}

// Weights returns every projector's weight, by name.
func Weights(cfg *config.Config) map[string]int {
	return BalanceConfigOf(cfg, "", nil).Weights
}

// ProjectorOf converts one projector's configuration.
func ProjectorOf(p config.Projector, cfg *config.Config, log *zap.Logger, obs runner.Observer) runner.Projector {
	return runner.Projector{
		Name:          p.Name,
		Filter:        store.Filter{EventTypes: p.EventTypes, StreamPrefix: p.StreamPrefix},
		BatchSize:     p.BatchSize,
		Policy:        p.OnError,
		CommitTimeout: commitTimeout(p, cfg),
		// A missed resume NOTIFY is caught as soon as status would show it.
		PauseRecheck: cfg.Metrics.RefreshInterval,
		Logger:       log,
		Observer:     obs,
	}
}

func (d *Daemon) connect(ctx context.Context) error {
	cfg := d.cfg
	// Every database step of the bootstrap is bounded; a step that times
	// out is retried by bootstrap with backoff. Long-lived goroutines get
	// ctx and bg, never this.
	steps, cancelSteps := context.WithTimeout(ctx, 2*cfg.Database.QueryTimeout+cfg.Database.ConnectTimeout)
	defer cancelSteps()
	source, err := d.pool(steps, cfg.Database.URL)
	if err != nil {
		return err
	}
	if err := d.prepareSchema(steps, source); err != nil {
		return err
	}
	// Resolved once: every statement names the table found now, so the
	// one checked is the one read (docs/architecture.md).
	src, err := SourceOf(cfg.Source).Resolve(steps, source)
	if err != nil {
		return err
	}
	d.log.Info("source table", zap.String("configured", cfg.Source.Table), zap.String("resolved", src.QualifiedName()))
	layout, err := src.Inspect(steps, source)
	if err != nil {
		return err
	}
	for _, w := range src.NullableWarnings(layout) {
		d.log.Warn("source column may hold NULL", zap.String("warning", w))
	}
	// Without the cursor index every batch sorts the table, slower with
	// every event stored: refused like a missing xid8 column unless the
	// operator said the table is small enough.
	unindexed := false
	if err := store.CheckCursorIndex(steps, source, src); err != nil {
		if !errors.Is(err, store.ErrNoCursorIndex) || !cfg.Source.AllowUnindexed {
			return err
		}
		unindexed = true
		d.log.Warn("source table has no cursor index; source.allow_unindexed lets projectord run, and every batch sorts the table",
			zap.String("problem", err.Error()))
	}
	if d.opts.OnSourceIndexed != nil {
		d.opts.OnSourceIndexed(!unindexed)
	}
	if src.Ordering == store.OrderPosition {
		d.log.Warn("source.ordering is position: events committed out of order WILL be skipped; run `projectord source prepare` and use xid8")
	}
	sourceID, err := store.SystemIdentifier(steps, source)
	if err != nil {
		return err
	}
	sinks := map[string]*store.SQLSink{}
	targets := map[string]*store.Target{}
	byURL := map[string]*store.Target{}
	https, err := d.httpSinks(ctx, source)
	if err != nil {
		return err
	}
	for _, p := range cfg.Projectors {
		if h, ok := https[p.Name]; ok {
			targets[p.Name] = h.target
			continue
		}
		sink, err := store.CompileSQLSink(p.Sink.SQL.Handlers, p.Sink.SQL.Reset)
		if err != nil {
			return fmt.Errorf("%w: projector %s: %v", errFatal, p.Name, err)
		}
		url := p.Sink.SQL.TargetURL
		if url == "" {
			url = cfg.Database.URL
		}
		pool, err := d.pool(steps, url)
		if err != nil {
			return err
		}
		if pool != source {
			if err := d.prepareSchema(steps, pool); err != nil {
				return err
			}
		}
		t, ok := byURL[url]
		if !ok {
			// One Target per database: status reads each database's
			// checkpoints in one query, however many projectors it holds.
			t = store.NewTarget(pool, cfg.Database.QueryTimeout)
			if d.opts.OnCommit != nil {
				t.ObserveCommits(d.opts.OnCommit)
			}
			if cfg.Database.GroupCommit {
				// Per database, since a transaction is: the projectors
				// of one target share its groups.
				t.EnableGroupCommit()
			}
			byURL[url] = t
		}
		sinks[p.Name], targets[p.Name] = sink, t
	}

	coordURL := cfg.Coordination.URL
	if coordURL == "" {
		coordURL = cfg.Database.URL
	}
	cc, err := pgx.ParseConfig(coordURL)
	if err != nil {
		return fmt.Errorf("%w: invalid coordination URL: %s", errFatal, config.RedactURL(err.Error()))
	}
	cc.ConnectTimeout = cfg.Database.ConnectTimeout
	if err := d.checkLockBudget(steps, source, coordURL, cc); err != nil {
		return err
	}
	reader := store.NewReader(source, src, cfg.Database.QueryTimeout).WithLayout(layout)
	watcher := runner.NewWatcher(reader, cfg.Source.PollInterval, d.log.Named("watcher"))
	listen := []string{store.ResetChannel, store.ResumeChannel, store.PauseChannel, store.RetryChannel, store.PromoteChannel}
	if cfg.Source.Listen {
		listen = append(listen, cfg.Source.NotifyChannel)
	}
	host, _ := os.Hostname()
	gate := runner.NewBalance(BalanceConfigOf(cfg, d.node, d.log.Named("balance")))
	session := coord.New(coord.Config{
		ConnConfig: cc, Namespace: cfg.Coordination.LockNamespace,
		NodeID: d.node, Hostname: host, Version: d.opts.Version,
		HeartbeatInterval: cfg.Coordination.HeartbeatInterval, AcquireInterval: cfg.Coordination.AcquireInterval,
		LeaseTimeout: cfg.Coordination.LeaseTimeout, TCPUserTimeout: cfg.Coordination.TCPUserTimeout,
		KeepaliveIdle: cfg.Coordination.KeepaliveIdle, KeepaliveInterval: cfg.Coordination.KeepaliveInterval,
		KeepaliveCount: cfg.Coordination.KeepaliveCount,
		NodeExpiry:     cfg.Coordination.NodeExpiry,
		Listen:         listen,
		OnNotify:       d.onNotify(watcher),
		OnSessionLost:  d.opts.OnSessionLost,
		PoolBackends:   d.backends,
		// Fed to the gate whether balancing is on or not: status shows
		// every replica's share either way.
		Observer: gate,
		Logger:   d.log.Named("coord"),
	})
	gate.SetWake(session.Nudge)
	var tail *runner.Tail
	// Not under position ordering, which has no horizon: a window read
	// ahead of a projector's cursor would pass, for every projector at
	// once, an event that commits late below it, where a read of its own
	// could still meet it. That ordering may skip already; this would
	// widen what it skips.
	largest := 1 // the largest batch_size
	for _, p := range cfg.Projectors {
		largest = max(largest, p.BatchSize)
	}
	if cfg.Source.SharedReads && src.Ordering != store.OrderPosition {
		// One read fills any projector's batch, twice over. The window
		// holds as many events as the memory budget lets batches hold
		// (and at least a few reads): a head that jumps by hundreds of
		// events at once, when a long transaction ends and the horizon
		// moves, must fit in it, or extending it to the head pushes out
		// what the projectors still need and sends them to read on their
		// own. Its size depends on the batch sizes and the pool, not on
		// how many projectors there are.
		limit := 2 * largest
		tail = runner.NewTail(runner.TailConfig{Source: reader, Heads: watcher.Head, Context: ctx, Limit: limit,
			Capacity: max(tailReads*limit, budgetBatches*int(cfg.Database.MaxConns)*largest), Observe: d.opts.ObserveRead})
		watcher.BeforePublish(tail.Advance)
		watcher.PollWith(tail.Poll)
	}
	b := runner.NewPGBackend(runner.PGBackendConfig{Node: d.node, Reader: reader, Watcher: watcher, Tail: tail,
		ObserveRead: d.opts.ObserveRead, Session: session,
		Balance: gate, SourceID: sourceID, Logger: d.log.Named("checkpoint")})
	var statusTargets []runner.StatusTarget
	for _, p := range cfg.Projectors {
		types, all := []string(nil), true
		if h, ok := https[p.Name]; ok {
			b.AddHTTPProjector(p.Name, h.target, h.sink)
		} else {
			b.AddProjector(p.Name, targets[p.Name], sinks[p.Name])
			types, all = sinks[p.Name].HandledTypes()
		}
		b.AddVersion(p.Name, VersionOf(p))
		statusTargets = append(statusTargets, runner.StatusTargetOf(ProjectorOf(p, cfg, nil, nil), targets[p.Name], types, all))
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if ctx.Err() != nil || d.stopping {
		return errors.Join(ctx.Err(), errStopping)
	}
	d.source, d.backend, d.bootErr = source, b, nil
	// In this order; Stop stops them in reverse, after the supervisors.
	d.services = append(d.services,
		goService("source watcher", ctx, watcher.Run),
		service{name: "coordination session", stop: session.Stop},
		goService("status refresher", ctx, func(ctx context.Context) { d.refresh(ctx, b, statusTargets) }))
	_ = session.Start(context.WithoutCancel(ctx))
	// Two of the largest batches per pooled connection: enough to keep
	// every connection busy (one reading, one committing) and no more. It
	// counts events, so at the live tail many small batches fit in it
	// (runner.Budget).
	budget := runner.NewBudget(budgetBatches * int(cfg.Database.MaxConns) * largest)
	for _, p := range cfg.Projectors {
		obs := d.opts.Observer
		if d.opts.signals != nil {
			obs = signalling{obs, d.opts.signals}
		}
		proj := ProjectorOf(p, cfg, d.log.Named("projector"), obs)
		proj.Budget = budget
		s := runner.NewSupervisor(proj, b)
		d.supervisors[p.Name] = s
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			if err := s.Run(ctx); err != nil {
				d.failed(err)
			}
		}()
	}
	d.log.Info("projectord started", zap.String("node", d.node), zap.Int("projectors", len(cfg.Projectors)))
	return nil
}

// failed ends the daemon with a fatal error a supervisor ended with
// (runner.IsFatal) as its cause: the replica cannot go on without an
// operator. The supervisors stop as on Stop; the caller then calls Stop.
func (d *Daemon) failed(err error) {
	if errors.Is(err, store.ErrClusterChanged) {
		d.log.Error("source cluster changed under a running daemon", zap.Error(err))
		err = fmt.Errorf("%w: %v", errFatal, err)
	} else {
		d.log.Error("cannot resume a checkpoint under the configured source.ordering", zap.Error(err))
	}
	d.end(err)
}

// checkLockBudget refuses to start when leading every configured projector
// would take more of the coordination server's shared lock table than one
// replica's share (store.LockSettings.Budget): running out of it fails
// every client of the cluster, not only this one. A coordination database
// other than the source is checked for a squatted schema too, since the
// session writes its node row there.
func (d *Daemon) checkLockBudget(ctx context.Context, source *pgxpool.Pool, coordURL string, cc *pgx.ConnConfig) error {
	var q interface {
		Query(context.Context, string, ...any) (pgx.Rows, error)
	} = source
	if coordURL != d.cfg.Database.URL {
		conn, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return fmt.Errorf("error connecting to the coordination database %s: %w", config.RedactURL(coordURL), err)
		}
		defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
		if err := store.CheckTrust(ctx, conn); err != nil {
			return err
		}
		q = conn
	}
	ls, err := store.ReadLockSettings(ctx, q)
	if err != nil {
		return err
	}
	return ls.Check(len(d.cfg.Projectors), int(d.cfg.Database.MaxConns))
}

func (d *Daemon) closePools() {
	d.mu.Lock()
	pools := d.pools
	d.pools = map[string]*pgxpool.Pool{}
	d.mu.Unlock()
	for _, p := range pools {
		p.Close()
	}
}

// onNotify routes notifications: a reset restarts that projector's run, a
// resume makes a halted supervisor compete again and a paused leader go on,
// a pause or a dead-letter retry request nudges the leader, a source NOTIFY
// wakes the watcher.
func (d *Daemon) onNotify(w *runner.Watcher) func(channel, payload string) {
	return func(channel, payload string) {
		if channel == store.PromoteChannel {
			d.onPromote(payload)
			return
		}
		if channel != store.ResetChannel && channel != store.ResumeChannel &&
			channel != store.PauseChannel && channel != store.RetryChannel {
			w.Kick()
			return
		}
		d.mu.Lock()
		s := d.supervisors[payload]
		d.mu.Unlock()
		switch {
		case s == nil:
		case channel == store.ResumeChannel:
			d.log.Info("projector resumed; competing for it again", zap.String("projector", payload))
			s.Wake()
			s.Nudge() // a paused leader goes on
		case channel == store.PauseChannel, channel == store.RetryChannel:
			// The leader reads what was asked at its next batch boundary.
			s.Nudge()
		default:
			d.log.Info("projector reset; restarting it from its new checkpoint", zap.String("projector", payload))
			s.Restart()
		}
	}
}

// Stop stops gracefully: leaders finish the batch in flight, commit and
// release their locks (standbys are notified), then the coordination
// session and pools close. If ctx ends first, the rest is cut short: the
// coordination session closes, dropping every lock, and fencing keeps any
// unfinished commit from landing. Safe to call twice.
func (d *Daemon) Stop(ctx context.Context) {
	d.stopOnce.Do(func() {
		// Under the lock, so a bootstrap finishing now either sees
		// stopping and starts nothing, or has started everything already.
		d.mu.Lock()
		d.stopping = true
		started := d.hasStarted
		if b := d.backend; b != nil && b.Balance != nil {
			// Before any leader stops: the others count this replica gone
			// now and take its projectors as they are released, rather than
			// at their next heartbeat.
			b.Balance.Stop()
			b.Session.Leave()
		}
		d.end(ErrStopped) // a fatal cause, if any, stays the cause
		d.mu.Unlock()
		if !started {
			return
		}
		d.bootWG.Wait() // bounded: it ends as soon as its step does
		done := make(chan struct{})
		go func() { d.wg.Wait(); close(done) }()
		graceful := true
		select {
		case <-done:
		case <-ctx.Done():
			graceful = false
		}
		// Stopping the session releases every lock (or, if it cannot,
		// drops them with its connection). When the budget ran out, that
		// also ends every lease, so the batches still in flight are cut
		// short: their commits run on their lease and fail at once, and
		// fencing keeps any that reached the server from landing once a
		// standby claims. Either way nothing outlives Stop: the
		// supervisors end, then the watcher, the refresher and the pools.
		if !graceful {
			d.log.Warn("shutdown budget exhausted; cutting the batches in flight short")
		}
		if b := d.Backend(); b != nil {
			b.Session.Stop()
		}
		<-done
		d.mu.Lock()
		services := d.services
		d.mu.Unlock()
		for i := len(services) - 1; i >= 0; i-- {
			services[i].stop()
		}
		d.closePools()
		d.log.Info("projectord stopped", zap.Bool("graceful", graceful))
	})
}
