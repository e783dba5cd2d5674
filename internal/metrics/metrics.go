// Package metrics exports projectord's Prometheus metrics (listed in the README's Metrics section) on
// an injected registry. Everything derived from the database (head, lag,
// horizon) is refreshed by the daemon on a ticker and pushed in through
// Snapshot, so a scrape never costs the database anything.
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
var reasons = []string{"read", "commit", "database", "shrink", "apply", "poison", "fenced", "run"}

// Batch results.
var results = []string{"committed", "failed", "fenced"}

// BuildInfo labels projectord_build_info.
type BuildInfo struct{ Version, Commit, GoVersion string }

// Metrics implements runner.Observer and records what projectors do.
type Metrics struct {
	state, checkpoint, lagEvents, lagSeconds  *prometheus.GaugeVec
	processed, batches, errors, leaderChanges *prometheus.CounterVec
	batchDuration                             *prometheus.HistogramVec
	head, horizonAge, unsafeOrdering          prometheus.Gauge
	hbFailures                                *prometheus.CounterVec

	projectors []string
	leaderDesc *prometheus.Desc

	mu      sync.Mutex
	leading map[string]bool
	fresh   func() bool
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
		state:      g("projector_state", "1 for the supervisor's current state on this replica.", "projector", "state"),
		checkpoint: g("projector_checkpoint_position", "Position of the projector's checkpoint (exported by its leader only).", "projector"),
		lagEvents:  g("projector_lag_events", "Committed events the projector has not applied yet (leader only; capped at 1e6).", "projector"),
		lagSeconds: g("projector_lag_seconds", "Age of the oldest unprocessed event in seconds, 0 when caught up (leader only).", "projector"),
		processed:  c("events_processed_total", "Events applied by this replica.", "projector"),
		batches:    c("batches_total", "Batches by result: committed, failed (retried) or fenced (deposed).", "projector", "result"),
		errors:     c("projector_errors_total", "Errors by reason: read, commit (transient), database (the database's or configuration's fault), shrink (batch split), apply (event retried), poison, fenced, run.", "projector", "reason"),
		leaderChanges: c("leadership_changes_total",
			"Times this replica gained or lost leadership of the projector.", "projector"),
		batchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "batch_duration_seconds", Help: "Time to apply and commit one batch.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"projector"}),
		head: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "source_head_position",
			Help: "Position of the newest committed event (refreshed every metrics.refresh_interval)."}),
		horizonAge: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "source_horizon_age_seconds",
			Help: "Age of the oldest transaction holding the xmin horizon back; events committed after it started wait for it."}),
		unsafeOrdering: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "source_unsafe_ordering",
			Help: "1 when source.ordering is position: events committed out of order can be skipped."}),
		hbFailures: c("coordination_heartbeat_failures_total",
			"Losses of the coordination session (each dropped every lease), by reason: connection, heartbeat, query, stalled, pooler.", "reason"),
		leading:    map[string]bool{},
		projectors: projectors,
		leaderDesc: prometheus.NewDesc(namespace+"_projector_leader",
			"1 if this replica leads the projector (holds its lock with a fresh heartbeat), else 0.", []string{"projector"}, nil),
		fresh: func() bool { return true },
	}
	info := g("build_info", "Build information; always 1.", "version", "commit", "goversion")
	info.WithLabelValues(build.Version, build.Commit, build.GoVersion).Set(1)
	reg.MustRegister(leaderCollector{m}, m.state, m.checkpoint, m.lagEvents, m.lagSeconds, m.processed, m.batches, m.errors,
		m.leaderChanges, m.batchDuration, m.head, m.horizonAge, m.unsafeOrdering, m.hbFailures, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: namespace}))
	for _, r := range coord.LossReasons() {
		m.hbFailures.WithLabelValues(r)
	}
	for _, p := range projectors {
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
	leads := s == runner.StateLeader
	m.mu.Lock()
	was := m.leading[projector]
	m.leading[projector] = leads
	m.mu.Unlock()
	if leads == was {
		return
	}
	m.leaderChanges.WithLabelValues(projector).Inc()
	if leads {
		return
	}
	// Only the leader exports positions and lag: a standby's would be stale.
	m.checkpoint.DeleteLabelValues(projector)
	m.lagEvents.DeleteLabelValues(projector)
	m.lagSeconds.DeleteLabelValues(projector)
}

func (m *Metrics) leads(projector string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leading[projector]
}

// BatchCommitted implements runner.Observer.
func (m *Metrics) BatchCommitted(projector string, events int, to store.Cursor, took time.Duration) {
	m.processed.WithLabelValues(projector).Add(float64(events))
	if events > 0 {
		m.batches.WithLabelValues(projector, "committed").Inc()
		m.batchDuration.WithLabelValues(projector).Observe(took.Seconds())
	}
	if m.leads(projector) {
		m.checkpoint.WithLabelValues(projector).Set(float64(to.Position))
	}
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

// Snapshot updates head, horizon and, for projectors this replica leads,
// positions and lag.
func (m *Metrics) Snapshot(s runner.Snapshot) {
	m.head.Set(float64(s.Head))
	m.horizonAge.Set(s.Horizon.AgeSeconds)
	for _, p := range s.Projectors {
		if !m.leads(p.Name) {
			continue
		}
		m.checkpoint.WithLabelValues(p.Name).Set(float64(p.Position))
		m.lagEvents.WithLabelValues(p.Name).Set(float64(p.LagEvents))
		m.lagSeconds.WithLabelValues(p.Name).Set(p.LagSeconds)
	}
}
