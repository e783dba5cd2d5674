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
		"projectord_leadership_changes_total", "projectord_source_head_position", "projectord_source_horizon_age_seconds",
		"projectord_coordination_heartbeat_failures_total", "projectord_build_info", "go_goroutines"} {
		require.True(t, names[want], "%s is exported from the start", want)
	}
	require.Equal(t, 2, countSeries(t, reg, "projectord_projector_leader"))
	require.Equal(t, 2*len(reasons), countSeries(t, reg, "projectord_projector_errors_total"))
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
	require.Equal(t, 42.0, testutil.ToFloat64(m.checkpoint.WithLabelValues("p")))
	require.Equal(t, 8.0, testutil.ToFloat64(m.lagEvents.WithLabelValues("p")))
	require.Equal(t, 10.0, testutil.ToFloat64(m.processed.WithLabelValues("p")))
	require.Equal(t, 50.0, testutil.ToFloat64(m.head))
	require.Equal(t, 2.0, testutil.ToFloat64(m.horizonAge))

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
