package daemon

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/testsupport"
)

// TestPGDaemonsShareByWeightAndSayHow: two daemons share projectors of
// weights 2, 1 and 1 two against two; each one's /status snapshot names
// both nodes, what each leads, its weight and target, and agrees with
// which supervisors lead; when one stops, the other leads all (its
// target is the whole weight) and every event is applied once.
func TestPGDaemonsShareByWeightAndSayHow(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 1000, 100, "A")
	cfg := tb.config(t, config.Projector{Name: "heavy", Weight: 2}, config.Projector{Name: "one"}, config.Projector{Name: "two"})
	a := tb.startDaemon(t, cfg, "node-a")
	b := tb.startDaemon(t, cfg, "node-b")
	ds := []*Daemon{a, b}
	// shared reports whether d's view says what is so: both nodes, each
	// leading weight 2 (its target), as the supervisors say.
	shared := func(d *Daemon) bool {
		st := d.Snapshot().Balance
		if st == nil || !st.Enabled || st.TotalWeight != 4 || len(st.Nodes) != 2 {
			return false
		}
		for _, n := range st.Nodes {
			if n.Target == nil || *n.Target != 2 || n.Weight != 2 {
				return false
			}
			var led []string
			for _, p := range []string{"heavy", "one", "two"} {
				if slices.Contains(leaders(ds, p), n.Node) {
					led = append(led, p)
				}
			}
			if !slices.Equal(led, n.Leads) {
				return false
			}
		}
		return true
	}
	testsupport.Until(t, "both views show the shares 2 and 2", 30*time.Second, func() bool { return shared(a) && shared(b) })
	st := a.Snapshot().Balance
	for _, n := range st.Nodes {
		if slices.Contains(n.Leads, "heavy") {
			require.Equal(t, []string{"heavy"}, n.Leads, "the heavy projector is a share on its own")
		}
	}
	tb.waitCaughtUp(t, "heavy", "one", "two")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	a.Stop(ctx)
	cancel()
	tb.appendEvents(t, 200, 50, "A")
	testsupport.Until(t, "b leads everything and says so", 30*time.Second, func() bool {
		st := b.Snapshot().Balance
		return st != nil && len(st.Nodes) == 1 && st.Nodes[0].Node == "node-b" && *st.Nodes[0].Target == 4 &&
			st.Nodes[0].Weight == 4 && len(leaders([]*Daemon{b}, "heavy")) == 1
	})
	tb.waitCaughtUp(t, "heavy", "one", "two")
	for _, p := range []string{"heavy", "one", "two"} {
		require.Equal(t, 1200, tb.checkExactlyOnce(t, p))
	}
	require.Equal(t, runner.StateLeader, b.States()["one"])
}
