package daemon

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// commitCount counts what Options.OnCommit and the observer's
// BatchCommitted report.
type commitCount struct {
	runner.NopObserver
	mu                                sync.Mutex
	grouped, single, inGroups, commit int
}

func (c *commitCount) onCommit(grouped bool, batches int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if grouped {
		c.grouped++
		c.inGroups += batches
	} else {
		c.single++
	}
}

func (c *commitCount) BatchCommitted(string, int, store.Cursor, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commit++
}

// With database.group_commit the projectors of one target database share
// transactions as they catch up together, exactly once each; without it
// none do. Either way OnCommit accounts for every batch the loops
// committed.
func TestPGGroupCommitOfOneTargetDatabase(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("group_commit=%v", on), func(t *testing.T) {
			t.Parallel()
			tb := setupPG(t)
			tb.appendEvents(t, 1000, 100, "A")
			const n = 12
			var ps []config.Projector
			var names []string
			for i := range n {
				names = append(names, fmt.Sprintf("p%02d", i))
				ps = append(ps, config.Projector{Name: names[i], BatchSize: 20})
			}
			cfg := tb.config(t, ps...)
			cfg.Database.GroupCommit = on
			cfg.Coordination.NodeID = "node-a"
			var count commitCount
			d := New(Options{Config: cfg, Logger: tb.log, Version: "test", Migrate: true, Observer: &count, OnCommit: count.onCommit})
			require.NoError(t, d.Start(tb.ctx))
			stopped := false
			stop := func() {
				if !stopped {
					stopped = true
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					d.Stop(ctx)
				}
			}
			t.Cleanup(stop)
			tb.waitCaughtUp(t, names...)
			stop()
			for _, p := range names {
				require.Equal(t, 1000, tb.checkExactlyOnce(t, p), p)
			}

			count.mu.Lock()
			defer count.mu.Unlock()
			t.Logf("%d batches: %d grouped transactions for %d of them, %d alone", count.commit, count.grouped, count.inGroups, count.single)
			require.Equal(t, count.commit, count.inGroups+count.single, "every batch committed is reported once")
			require.GreaterOrEqual(t, count.commit, n*1000/20)
			if on {
				require.Positive(t, count.grouped)
				require.Less(t, count.grouped+count.single, count.commit)
			} else {
				require.Zero(t, count.grouped)
			}
		})
	}
}
