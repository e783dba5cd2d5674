package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

func TestLabelSetsStartAtZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	New(reg, []string{"a", "b"}, BuildInfo{Version: "v1", Commit: "c", GoVersion: "go"})
	families, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, f := range families {
		names[f.GetName()] = true
	}
	for _, want := range []string{"projectord_projector_leader", "projectord_projector_state", "projectord_events_processed_total",
		"projectord_batches_total", "projectord_projector_errors_total", "projectord_batch_duration_seconds",
		"projectord_leadership_changes_total", "projectord_poison_events_total",
		"projectord_coordination_heartbeat_failures_total", "projectord_build_info", "go_goroutines"} {
		require.True(t, names[want], "%s is exported from the start", want)
	}
	// What comes from the database is not known before the first refresh.
	require.False(t, names["projectord_source_head_position"])
	require.False(t, names["projectord_source_horizon_age_seconds"])
	require.Equal(t, 2, countSeries(t, reg, "projectord_projector_leader"))
	require.Equal(t, 2*len(reasons), countSeries(t, reg, "projectord_projector_errors_total"))
	require.Equal(t, 2*len(runner.Outcomes), countSeries(t, reg, "projectord_poison_events_total"))
}

func TestOnlyTheLeaderExportsPositionsAndLag(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, []string{"p"}, BuildInfo{})
	m.StateChanged("p", runner.StateLeader)
	m.BatchCommitted("p", 10, store.Cursor{XID: 5, Position: 42}, 3*time.Millisecond)
	m.Snapshot(runner.Snapshot{Head: 50, Horizon: runner.HorizonStatus{AgeSeconds: 2},
		Projectors: []runner.ProjectorStatus{{Name: "p", Position: 42, LagEvents: 8, LagSeconds: 1.5}}})
	require.True(t, m.Leader("p"))
	m.SetFreshness(func() bool { return false })
	require.False(t, m.Leader("p"), "a stale session reports no leadership")
	m.SetFreshness(func() bool { return true })
	require.Equal(t, 1.0, testutil.ToFloat64(m.state.WithLabelValues("p", "leader")))
	require.Equal(t, 0.0, testutil.ToFloat64(m.state.WithLabelValues("p", "standby")))
	require.Equal(t, 42.0, value(t, reg, "projectord_projector_checkpoint_position", "p"))
	require.Equal(t, 8.0, value(t, reg, "projectord_projector_lag_events", "p"))
	require.Equal(t, 10.0, testutil.ToFloat64(m.processed.WithLabelValues("p")))
	require.Equal(t, 50.0, value(t, reg, "projectord_source_head_position", ""))
	require.Equal(t, 2.0, value(t, reg, "projectord_source_horizon_age_seconds", ""))

	m.StateChanged("p", runner.StateStandby)
	require.False(t, m.Leader("p"))
	require.Zero(t, countSeries(t, reg, "projectord_projector_checkpoint_position"), "a standby exports no position")
	require.Zero(t, countSeries(t, reg, "projectord_projector_lag_events"))
	m.Snapshot(runner.Snapshot{Projectors: []runner.ProjectorStatus{{Name: "p", Position: 42, LagEvents: 8}}})
	require.Zero(t, countSeries(t, reg, "projectord_projector_lag_events"), "nor lag")
	require.Equal(t, 2.0, testutil.ToFloat64(m.leaderChanges.WithLabelValues("p")))

	m.Error("p", "fenced", errors.New("x"))
	require.Equal(t, 1.0, testutil.ToFloat64(m.batches.WithLabelValues("p", "fenced")))
	require.Equal(t, 1.0, testutil.ToFloat64(m.errors.WithLabelValues("p", "fenced")))
}

// A halted projector is nobody's to lead, and every replica knows it is
// halted: each exports its lag, so the lag alerts see it.
func TestEveryReplicaExportsTheLagOfAHaltedProjector(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, []string{"p", "q"}, BuildInfo{})
	m.StateChanged("p", runner.StateHalted)
	m.StateChanged("q", runner.StateStandby)
	m.Snapshot(runner.Snapshot{Head: 2000, Projectors: []runner.ProjectorStatus{
		{Name: "p", Status: store.StatusHalted, Position: 989, LagEvents: 1011, LagSeconds: 16},
		{Name: "q", Status: store.StatusRunning, Position: 2000},
	}})
	require.Equal(t, 1011.0, value(t, reg, "projectord_projector_lag_events", "p"))
	require.Equal(t, 16.0, value(t, reg, "projectord_projector_lag_seconds", "p"))
	require.Equal(t, 989.0, value(t, reg, "projectord_projector_checkpoint_position", "p"))
	require.Equal(t, 1, countSeries(t, reg, "projectord_projector_lag_events"), "q is led elsewhere: not ours to report")
}

// The head is refreshed every refresh_interval, the leader's checkpoint
// with every batch: the exported head is never below an exported
// checkpoint. A stale view exports neither.
func TestHeadNeverBelowCheckpointAndStaleViewExportsNothing(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, []string{"p"}, BuildInfo{})
	snap := runner.Snapshot{Head: 100, Horizon: runner.HorizonStatus{AgeSeconds: 9.34},
		Projectors: []runner.ProjectorStatus{{Name: "p", Status: store.StatusRunning, Position: 90, LagEvents: 10}}}
	fresh := true
	m.SetView(func() (runner.Snapshot, bool) { return snap, fresh })
	m.StateChanged("p", runner.StateLeader)
	m.BatchCommitted("p", 800, store.Cursor{XID: 9, Position: 900}, time.Millisecond)
	require.Equal(t, 900.0, value(t, reg, "projectord_projector_checkpoint_position", "p"))
	require.Equal(t, 900.0, value(t, reg, "projectord_source_head_position", ""), "the head is at least the checkpoint")

	fresh = false
	for _, name := range []string{"projectord_projector_checkpoint_position", "projectord_projector_lag_events",
		"projectord_projector_lag_seconds", "projectord_source_head_position", "projectord_source_horizon_age_seconds"} {
		require.Zero(t, countSeries(t, reg, name), "%s is not exported from a stale view", name)
	}
	require.Equal(t, 1.0, value(t, reg, "projectord_projector_leader", "p"), "leadership is the session's to say, not the view's")
}

func TestPoisonedCountsByOutcome(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, []string{"p"}, BuildInfo{})
	m.Poisoned("p", runner.OutcomeHalted)
	require.Equal(t, 1.0, testutil.ToFloat64(m.poison.WithLabelValues("p", "halted")))
	require.Equal(t, 0.0, testutil.ToFloat64(m.poison.WithLabelValues("p", "skipped")))
}

// value is the value of the series of name for projector ("" for a series
// without labels); the test fails when there is none.
func value(t *testing.T, reg *prometheus.Registry, name, projector string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			got := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "projector" {
					got = l.GetValue()
				}
			}
			if got != projector {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s{projector=%q}", name, projector)
	return 0
}

func countSeries(t *testing.T, reg *prometheus.Registry, name string) int {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	if !strings.HasPrefix(name, "projectord_") {
		t.Fatalf("unknown family %s", name)
	}
	return 0
}
