package metrics

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
)

// TestLedCountFollowsTheLeaderGauge: projectors_led and its weight count
// exactly the projectors whose projector_leader is 1 (a replica whose
// heartbeat is stale leads nothing); the target and the members appear
// only while the daemon knows them.
func TestLedCountFollowsTheLeaderGauge(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := New(reg, []string{"a", "b", "c"}, BuildInfo{})
	m.SetWeights(map[string]int{"a": 1, "b": 5, "c": 2})
	// gather lists the balancing series present, in a fixed order.
	gather := func() string {
		t.Helper()
		mfs, err := reg.Gather()
		require.NoError(t, err)
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, s := range mf.GetMetric() {
				got[mf.GetName()] = s.GetGauge().GetValue() + s.GetCounter().GetValue()
			}
		}
		var b strings.Builder
		for _, name := range []string{"projectord_projectors_led", "projectord_projectors_led_weight",
			"projectord_balance_target_weight", "projectord_balance_members", "projectord_balance_handovers_total"} {
			if v, ok := got[name]; ok {
				fmt.Fprintf(&b, "%s %g\n", name, v)
			}
		}
		return b.String()
	}
	require.Equal(t, "projectord_projectors_led 0\nprojectord_projectors_led_weight 0\nprojectord_balance_handovers_total 0\n", gather())

	m.StateChanged("b", runner.StateLeader)
	m.StateChanged("c", runner.StateLeader)
	m.SetBalance(func() runner.BalanceStats {
		return runner.BalanceStats{Known: true, TargetKnown: true, Members: 3, Target: 3, HandOvers: 4}
	})
	require.Equal(t, "projectord_projectors_led 2\nprojectord_projectors_led_weight 7\nprojectord_balance_target_weight 3\n"+
		"projectord_balance_members 3\nprojectord_balance_handovers_total 4\n", gather())

	m.SetFreshness(func() bool { return false })
	m.SetBalance(func() runner.BalanceStats { return runner.BalanceStats{HandOvers: 4} })
	require.Equal(t, "projectord_projectors_led 0\nprojectord_projectors_led_weight 0\nprojectord_balance_handovers_total 4\n", gather(),
		"a stale replica leads nothing and knows no share")
}
