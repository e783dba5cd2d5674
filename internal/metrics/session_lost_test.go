package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/coord"
)

// Every loss reason of the coordination session is a series at 0 from the
// start, under the metric's old name, and each loss counts under its reason.
func TestSessionLossesByReason(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, []string{"p"}, BuildInfo{})
	const name = "projectord_coordination_heartbeat_failures_total"
	require.Equal(t, len(coord.LossReasons()), countSeries(t, reg, name))
	for _, r := range coord.LossReasons() {
		require.Zero(t, testutil.ToFloat64(m.hbFailures.WithLabelValues(r)), r)
	}
	m.SessionLost(coord.LostConnection)
	m.SessionLost(coord.LostConnection)
	m.SessionLost(coord.LostStalled)
	require.Equal(t, 2.0, testutil.ToFloat64(m.hbFailures.WithLabelValues(coord.LostConnection)))
	require.Equal(t, 1.0, testutil.ToFloat64(m.hbFailures.WithLabelValues(coord.LostStalled)))
	require.Zero(t, testutil.ToFloat64(m.hbFailures.WithLabelValues(coord.LostHeartbeat)))
	require.Equal(t, len(coord.LossReasons()), countSeries(t, reg, name))
}
