// Package metrics exports projectord's Prometheus metrics (listed in the README's Metrics section) on
// an injected registry. Everything derived from the database (head, lag,
// horizon) comes from the daemon's latest status snapshot (refreshed on a
// ticker), read at scrape time through SetView, so a scrape never costs the
// database anything and never serves what the replica cannot know: while
// the snapshot is stale, none of it is exported.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

const namespace = "projectord"

// Error reasons, initialised to zero for every projector.
var reasons = []string{"read", "commit", "database", "shrink", "apply", "poison", "fenced", "run", "version"}

// Batch results.
var results = []string{"committed", "failed", "fenced"}

// Commit modes: a transaction for several batches, or for one.
var commitModes = []string{"grouped", "single"}

// BuildInfo labels projectord_build_info.
type BuildInfo struct{ Version, Commit, GoVersion string }

// Metrics implements runner.Observer and records what projectors do.
type Metrics struct {
	state                                     *prometheus.GaugeVec
	processed, batches, errors, leaderChanges *prometheus.CounterVec
	poison                                    *prometheus.CounterVec
	batchDuration                             *prometheus.HistogramVec
	unsafeOrdering, unindexed                 prometheus.Gauge
	sourceReads                               *prometheus.CounterVec
	sharedBatches                             prometheus.Counter
	hbFailures                                *prometheus.CounterVec
	commits                                   *prometheus.CounterVec
	groupBatches                              prometheus.Histogram

	projectors []string
	// perBatch holds, per configured projector, the series every batch
	// touches, looked up once: at the live tail a replica commits
	// thousands of batches a second, and hashing label values for each
	// was a measurable share of its CPU.
	perBatch   map[string]batchSeries
	leaderDesc *prometheus.Desc
	// Balancing, computed at scrape time (balanceCollector).
	ledDesc, ledWeightDesc, targetDesc, membersDesc, handOversDesc *prometheus.Desc
	// What comes from the database, computed at scrape time (viewCollector).
	checkpointDesc, lagEventsDesc, lagSecondsDesc, headDesc, horizonDesc *prometheus.Desc

	mu      sync.Mutex
	weights map[string]int
	balance func() runner.BalanceStats
	leading map[string]bool
	// live is the checkpoint position of each projector this replica leads,
	// from its own commits (fresher than any snapshot).
	live   map[string]int64
	fresh  func() bool
	view   func() (runner.Snapshot, bool)
	pushed runner.Snapshot
	pushes bool
}

var _ runner.Observer = (*Metrics)(nil)

// New registers every metric on reg, with label sets for every projector
// initialised to zero so dashboards and alerts see series from the start.
func New(reg prometheus.Registerer, projectors []string, build BuildInfo) *Metrics {
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, labels)
	}
	c := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, labels)
	}
	m := &Metrics{
		state:     g("projector_state", "1 for the supervisor's current state on this replica.", "projector", "state"),
		processed: c("events_processed_total", "Events applied by this replica.", "projector"),
		poison: c("poison_events_total", "Poison events (every retry failed) by what on_error.then did: skipped, dead_lettered or halted; counted once, by the replica whose outcome was recorded.",
			"projector", "outcome"),
		batches: c("batches_total", "Batches by result: committed, failed (retried) or fenced (deposed).", "projector", "result"),
		errors:  c("projector_errors_total", "Errors by reason: read, commit (transient), database (the database's or configuration's fault), shrink (batch split), apply (event retried), poison, fenced, run.", "projector", "reason"),
		leaderChanges: c("leadership_changes_total",
			"Times this replica gained or lost leadership of the projector.", "projector"),
		batchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "batch_duration_seconds", Help: "Time to apply and commit one batch.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"projector"}),
		unsafeOrdering: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "source_unsafe_ordering",
			Help: "1 when source.ordering is position: events committed out of order can be skipped."}),
		unindexed: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "source_unindexed",
			Help: "1 when the source table has no cursor index and source.allow_unindexed let projectord run: every batch sorts the table."}),
		sourceReads: c("source_reads_total",
			"Read queries for batches, by mode: shared (one read extending the shared window, for every projector at the live tail) or own (a projector's read of its own, catching up).", "mode"),
		sharedBatches: prometheus.NewCounter(prometheus.CounterOpts{Namespace: namespace, Name: "shared_read_batches_total",
			Help: "Batches served to projectors from the shared window, with no query of their own."}),
		hbFailures: c("coordination_heartbeat_failures_total",
			"Losses of the coordination session (each dropped every lease), by reason: connection, heartbeat, query, stalled, pooler.", "reason"),
		commits: c("commit_transactions_total",
			"Transactions committed for this replica's batches, by mode: grouped (one transaction for several projectors' batches, database.group_commit) or single (one batch).", "mode"),
		groupBatches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "commit_group_batches", Help: "Batches per grouped transaction.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		leading:    map[string]bool{},
		live:       map[string]int64{},
		projectors: projectors,
		leaderDesc: prometheus.NewDesc(namespace+"_projector_leader",
			"1 if this replica leads the projector (holds its lock with a fresh heartbeat), else 0.", []string{"projector"}, nil),
		checkpointDesc: prometheus.NewDesc(namespace+"_projector_checkpoint_position",
			"Position of the projector's checkpoint (exported by its leader, and by every replica while it is halted).", []string{"projector"}, nil),
		lagEventsDesc: prometheus.NewDesc(namespace+"_projector_lag_events",
			"Committed events a handler of the projector acts on and it has not applied yet, capped at 1e6 (leader, or every replica while halted).", []string{"projector"}, nil),
		lagSecondsDesc: prometheus.NewDesc(namespace+"_projector_lag_seconds",
			"Age of the oldest such event in seconds, 0 when caught up (leader, or every replica while halted).", []string{"projector"}, nil),
		headDesc: prometheus.NewDesc(namespace+"_source_head_position",
			"Position of the newest committed event (refreshed every metrics.refresh_interval; never below an exported checkpoint).", nil, nil),
		horizonDesc: prometheus.NewDesc(namespace+"_source_horizon_age_seconds",
			"Age of the oldest transaction holding the xmin horizon back; events committed after it started wait for it.", nil, nil),
		ledDesc: prometheus.NewDesc(namespace+"_projectors_led",
			"Projectors this replica leads (those whose projector_leader is 1).", nil, nil),
		ledWeightDesc: prometheus.NewDesc(namespace+"_projectors_led_weight",
			"Total weight (projectors[].weight) of the projectors this replica leads.", nil, nil),
		targetDesc: prometheus.NewDesc(namespace+"_balance_target_weight",
			"The weight this replica should lead under coordination.balance: floor or ceil of the live replicas' total over their number (while balancing is on and the coordination session's view is fresh).", nil, nil),
		membersDesc: prometheus.NewDesc(namespace+"_balance_members",
			"Live replicas in this replica's view of the coordination database, itself included (while that view is fresh).", nil, nil),
		handOversDesc: prometheus.NewDesc(namespace+"_balance_handovers_total",
			"Leaderships this replica handed over to balance the replicas' shares.", nil, nil),
		fresh: func() bool { return true },
	}
	info := g("build_info", "Build information; always 1.", "version", "commit", "goversion")
	info.WithLabelValues(build.Version, build.Commit, build.GoVersion).Set(1)
	reg.MustRegister(leaderCollector{m}, balanceCollector{m}, viewCollector{m}, versionCollector{m}, m.state, m.processed, m.poison, m.batches, m.errors,
		m.leaderChanges, m.batchDuration, m.unsafeOrdering, m.unindexed, m.sourceReads, m.sharedBatches, m.hbFailures, m.commits, m.groupBatches, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: namespace}))
	for _, mode := range []string{"shared", "own"} {
		m.sourceReads.WithLabelValues(mode)
	}
	for _, r := range coord.LossReasons() {
		m.hbFailures.WithLabelValues(r)
	}
	for _, mode := range commitModes {
		m.commits.WithLabelValues(mode)
	}
	m.perBatch = make(map[string]batchSeries, len(projectors))
	for _, p := range projectors {
		m.perBatch[p] = m.batchSeries(p)
		for _, s := range runner.States {
			m.state.WithLabelValues(p, string(s)).Set(0)
		}
		m.state.WithLabelValues(p, string(runner.StateStarting)).Set(1)
		m.processed.WithLabelValues(p)
		m.leaderChanges.WithLabelValues(p)
		m.batchDuration.WithLabelValues(p)
		for _, r := range results {
			m.batches.WithLabelValues(p, r)
		}
		for _, r := range reasons {
			m.errors.WithLabelValues(p, r)
		}
		for _, o := range runner.Outcomes {
			m.poison.WithLabelValues(p, string(o))
		}
	}
	return m
}

// StateChanged implements runner.Observer.
func (m *Metrics) StateChanged(projector string, s runner.State) {
	for _, st := range runner.States {
		v := 0.0
		if st == s {
			v = 1
		}
		m.state.WithLabelValues(projector, string(st)).Set(v)
	}
	// A paused leader still holds the lock: no other replica leads.
	leads := s == runner.StateLeader || s == runner.StatePaused
	m.mu.Lock()
	was := m.leading[projector]
	m.leading[projector] = leads
	// A new leadership starts from its claimed checkpoint, which only its
	// commits and snapshots tell; an old one's position may be anyone's now.
	delete(m.live, projector)
	m.mu.Unlock()
	if leads != was {
		m.leaderChanges.WithLabelValues(projector).Inc()
	}
}

// batchSeries are the series of one projector that each batch updates.
type batchSeries struct {
	processed, committed prometheus.Counter
	duration             prometheus.Observer
}

func (m *Metrics) batchSeries(projector string) batchSeries {
	if s, ok := m.perBatch[projector]; ok {
		return s
	}
	return batchSeries{m.processed.WithLabelValues(projector), m.batches.WithLabelValues(projector, "committed"),
		m.batchDuration.WithLabelValues(projector)}
}

// BatchCommitted implements runner.Observer.
func (m *Metrics) BatchCommitted(projector string, events int, to store.Cursor, took time.Duration) {
	s := m.batchSeries(projector)
	s.processed.Add(float64(events))
	if events > 0 {
		s.committed.Inc()
		s.duration.Observe(took.Seconds())
	}
	m.mu.Lock()
	if m.leading[projector] {
		m.live[projector] = to.Position
	}
	m.mu.Unlock()
}

// Poisoned implements runner.Observer.
func (m *Metrics) Poisoned(projector string, o runner.Outcome) {
	m.poison.WithLabelValues(projector, string(o)).Inc()
}

// Error implements runner.Observer.
func (m *Metrics) Error(projector, reason string, err error) {
	m.errors.WithLabelValues(projector, reason).Inc()
	switch reason {
	case "commit", "database", "shrink":
		m.batches.WithLabelValues(projector, "failed").Inc()
	case "fenced":
		m.batches.WithLabelValues(projector, "fenced").Inc()
	}
}

// SetFreshness makes projector_leader report 1 only while fresh() holds:
// a replica that wakes from a freeze serves no scrape claiming leadership
// before its coordination session has noticed it may have been replaced.
func (m *Metrics) SetFreshness(fresh func() bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fresh = fresh
}

// Leader reports what projector_leader exports for projector.
func (m *Metrics) Leader(projector string) bool {
	m.mu.Lock()
	leads, fresh := m.leading[projector], m.fresh
	m.mu.Unlock()
	return leads && fresh()
}

// leaderCollector computes projector_leader at scrape time.
type leaderCollector struct{ m *Metrics }

func (c leaderCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.leaderDesc }

func (c leaderCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.m.projectors {
		v := 0.0
		if c.m.Leader(p) {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.m.leaderDesc, prometheus.GaugeValue, v, p)
	}
}

// SetWeights sets each projector's weight (default 1), for
// projectors_led_weight.
func (m *Metrics) SetWeights(w map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.weights = w
}

// SetBalance makes scrapes read balancing figures from f.
func (m *Metrics) SetBalance(f func() runner.BalanceStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.balance = f
}

// balanceCollector computes the led count and weight from what
// projector_leader says (so the two never disagree), and the balancing
// figures at scrape time.
type balanceCollector struct{ m *Metrics }

func (c balanceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.m.ledDesc, c.m.ledWeightDesc, c.m.targetDesc, c.m.membersDesc, c.m.handOversDesc} {
		ch <- d
	}
}

func (c balanceCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	led, weight := 0, 0
	for _, p := range m.projectors {
		if !m.Leader(p) {
			continue
		}
		led++
		m.mu.Lock()
		w, ok := m.weights[p]
		m.mu.Unlock()
		if !ok || w < 1 {
			w = 1
		}
		weight += w
	}
	ch <- prometheus.MustNewConstMetric(m.ledDesc, prometheus.GaugeValue, float64(led))
	ch <- prometheus.MustNewConstMetric(m.ledWeightDesc, prometheus.GaugeValue, float64(weight))
	m.mu.Lock()
	f := m.balance
	m.mu.Unlock()
	var b runner.BalanceStats
	if f != nil {
		b = f()
	}
	ch <- prometheus.MustNewConstMetric(m.handOversDesc, prometheus.CounterValue, float64(b.HandOvers))
	if b.Known {
		ch <- prometheus.MustNewConstMetric(m.membersDesc, prometheus.GaugeValue, float64(b.Members))
	}
	if b.TargetKnown {
		ch <- prometheus.MustNewConstMetric(m.targetDesc, prometheus.GaugeValue, float64(b.Target))
	}
}

// Committed counts a transaction committed for batches: grouped (for
// batches of several projectors) or single (for one batch). It is the
// daemon's Options.OnCommit.
func (m *Metrics) Committed(grouped bool, batches int) {
	if !grouped {
		m.commits.WithLabelValues("single").Inc()
		return
	}
	m.commits.WithLabelValues("grouped").Inc()
	m.groupBatches.Observe(float64(batches))
}

// SessionLost counts a loss of the coordination session, by one of
// coord.LossReasons.
func (m *Metrics) SessionLost(reason string) { m.hbFailures.WithLabelValues(reason).Inc() }

// UnsafeOrdering records that the source is read by position alone.
func (m *Metrics) UnsafeOrdering(unsafe bool) {
	if unsafe {
		m.unsafeOrdering.Set(1)
	} else {
		m.unsafeOrdering.Set(0)
	}
}

// Unindexed records whether the source table lacks its cursor index
// (found at start; only source.allow_unindexed lets run go on then).
func (m *Metrics) Unindexed(missing bool) {
	if missing {
		m.unindexed.Set(1)
	} else {
		m.unindexed.Set(0)
	}
}

// SourceRead records what one read did (runner.Tail).
func (m *Metrics) SourceRead(r runner.TailRead) {
	switch r {
	case runner.TailServed:
		m.sharedBatches.Inc()
	case runner.TailShared:
		m.sourceReads.WithLabelValues("shared").Inc()
	default:
		m.sourceReads.WithLabelValues("own").Inc()
	}
}

// Snapshot records the daemon's latest snapshot; without a view (SetView)
// it is what scrapes export, always taken as fresh.
func (m *Metrics) Snapshot(s runner.Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pushed, m.pushes = s, true
}

// SetView makes scrapes read the database-derived values from view, which
// returns the latest snapshot and whether it is fresh (daemon.Daemon.View).
// Nothing of a stale one is exported.
func (m *Metrics) SetView(view func() (runner.Snapshot, bool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.view = view
}

func (m *Metrics) current() (runner.Snapshot, bool) {
	m.mu.Lock()
	view, pushed, ok := m.view, m.pushed, m.pushes
	m.mu.Unlock()
	if view != nil {
		return view()
	}
	return pushed, ok
}

// viewCollector exports, at scrape time, what comes from the database:
// positions and lag of the projectors this replica leads and of those that
// are halted (every replica knows a halt: it is recorded in the database),
// the head and the horizon. The head is never below an exported
// checkpoint: both are committed events, and a checkpoint moved by a
// commit after the snapshot is newer than the snapshot's head.
type viewCollector struct{ m *Metrics }

func (c viewCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.m.checkpointDesc, c.m.lagEventsDesc, c.m.lagSecondsDesc, c.m.headDesc, c.m.horizonDesc} {
		ch <- d
	}
}

func (c viewCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	s, fresh := m.current()
	if !fresh {
		return
	}
	head := s.Head
	for _, p := range s.Projectors {
		leads := m.Leader(p.Name)
		if !leads && p.Status != store.StatusHalted {
			continue
		}
		pos := p.Position
		if leads {
			m.mu.Lock()
			if live, ok := m.live[p.Name]; ok {
				pos = live
			}
			m.mu.Unlock()
		}
		head = max(head, pos)
		ch <- prometheus.MustNewConstMetric(m.checkpointDesc, prometheus.GaugeValue, float64(pos), p.Name)
		ch <- prometheus.MustNewConstMetric(m.lagEventsDesc, prometheus.GaugeValue, float64(p.LagEvents), p.Name)
		ch <- prometheus.MustNewConstMetric(m.lagSecondsDesc, prometheus.GaugeValue, p.LagSeconds, p.Name)
	}
	ch <- prometheus.MustNewConstMetric(m.headDesc, prometheus.GaugeValue, float64(head))
	ch <- prometheus.MustNewConstMetric(m.horizonDesc, prometheus.GaugeValue, s.Horizon.AgeSeconds)
}
