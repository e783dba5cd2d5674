package runner_test

import (
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// prefetchGate is a replica whose every full-batch commit overlaps a
// prefetch: the k-th full-batch commit attempt waits until the k-th
// prefetch read has begun, and that read waits until the commit has
// returned (or, if hold says so, until the run stops). So whenever a
// commit ends, however it ends, a prefetch is in flight. end decides how
// the k-th attempt ends: an error fails it, nil applies it.
//
// With a budget of two full batches and one projector, a read that begins
// with none of it free is the prefetch: the (full) batch being committed
// holds the other half.
type prefetchGate struct {
	*memtest.Node
	budget *runner.Budget
	batch  int
	end    func(ctx context.Context, k int) error
	hold   func(k int) bool

	mu                            sync.Mutex
	prefetches, commits, returned int
	changed                       chan struct{}
}

// bump changes the counters under mu and wakes every waiter.
func (g *prefetchGate) bump(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f()
	close(g.changed)
	g.changed = make(chan struct{})
}

// until waits for cond (read under mu); false when ctx ends first.
func (g *prefetchGate) until(ctx context.Context, cond func() bool) bool {
	for {
		g.mu.Lock()
		ok, ch := cond(), g.changed
		g.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

func (g *prefetchGate) count() (prefetches, commits int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.prefetches, g.commits
}

func (g *prefetchGate) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	if g.budget.Free() == 0 {
		var k int
		g.bump(func() { g.prefetches++; k = g.prefetches })
		if g.hold(k) {
			<-ctx.Done()
		} else {
			g.until(ctx, func() bool { return g.returned >= k })
		}
	}
	return g.Node.Read(ctx, after, f, limit, buf)
}

func (g *prefetchGate) Commit(ctx context.Context, req store.CommitRequest) error {
	if len(req.Events) != g.batch {
		return g.Node.Commit(ctx, req)
	}
	var k int
	g.bump(func() { g.commits++; k = g.commits })
	defer g.bump(func() { g.returned = k })
	if !g.until(ctx, func() bool { return g.prefetches >= k }) {
		return ctx.Err()
	}
	if err := g.end(ctx, k); err != nil {
		return err
	}
	return g.Node.Commit(ctx, req)
}

// labelled counts the goroutines carrying the pprof label key=value: those
// started, directly or not, from a goroutine running under pprof.Do with
// it, so other tests running in parallel are not counted.
func labelled(t *testing.T, key, value string) int {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, pprof.Lookup("goroutine").WriteTo(&buf, 1))
	want := fmt.Sprintf("%q:%q", key, value)
	n := 0
	for _, rec := range strings.Split(buf.String(), "\n\n") {
		lines := strings.SplitN(rec, "\n", 3)
		if len(lines) < 2 || !strings.HasPrefix(lines[1], "# labels: ") || !strings.Contains(lines[1], want) {
			continue
		}
		var c int
		_, err := fmt.Sscanf(lines[0], "%d @", &c)
		require.NoError(t, err, "goroutine profile record %q", lines[0])
		n += c
	}
	return n
}

// TestLoopGivesBackEveryBatch: whatever ends a leader's run while a
// prefetch is in flight (lost leadership and a graceful stop together, a
// stop during a commit that then fails, a stop during a commit that then
// goes through), and after commits that failed with a prefetch in flight,
// every token of the memory budget is back once Run returns and no
// goroutine of the loop is left. No event was skipped or applied twice.
func TestLoopGivesBackEveryBatch(t *testing.T) {
	t.Parallel()
	const (
		batchSize = 5
		failed    = 3 // the first full-batch commits fail, each with a prefetch in flight
		last      = 6 // the run ends during this full-batch commit
	)
	transient := &pgconn.PgError{Severity: "ERROR", Code: "40001", Message: "could not serialize access"}
	for _, tc := range []struct {
		name string
		// ending is how the last commit ends once the run is told to end;
		// released is closed then.
		ending  func(ctx context.Context, released <-chan struct{}) error
		endRun  func(mem *memtest.Memory, stop context.CancelFunc, release func())
		wantErr error
		wantPos int64
	}{{
		name: "lease lost and stopped mid-commit",
		ending: func(ctx context.Context, _ <-chan struct{}) error {
			<-ctx.Done() // a commit that hangs until leadership ends
			return ctx.Err()
		},
		endRun:  func(mem *memtest.Memory, stop context.CancelFunc, _ func()) { mem.LoseLeases("a"); stop() },
		wantErr: runner.ErrLeaseLost,
		wantPos: (last - failed - 1) * batchSize,
	}, {
		name: "stopped mid-commit that fails",
		ending: func(ctx context.Context, released <-chan struct{}) error {
			<-released
			return transient
		},
		endRun:  func(_ *memtest.Memory, stop context.CancelFunc, release func()) { stop(); release() },
		wantPos: (last - failed - 1) * batchSize,
	}, {
		name: "stopped mid-commit that commits",
		ending: func(ctx context.Context, released <-chan struct{}) error {
			<-released
			return nil
		},
		endRun:  func(_ *memtest.Memory, stop context.CancelFunc, release func()) { stop(); release() },
		wantPos: (last - failed) * batchSize,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := setupMem(t)
			budget := runner.NewBudget(2 * batchSize)
			tb.p.BatchSize, tb.p.Budget = batchSize, budget
			for i := 0; i < 12*batchSize; i++ {
				tb.mem.AppendCommitted("s", "A", "{}")
			}
			atLast, released := make(chan struct{}), make(chan struct{})
			g := &prefetchGate{Node: tb.mem.Node("a"), budget: budget, batch: batchSize, changed: make(chan struct{}),
				hold: func(k int) bool { return k == last },
				end: func(ctx context.Context, k int) error {
					switch {
					case k <= failed:
						return transient
					case k == last:
						close(atLast)
						return tc.ending(ctx, released)
					}
					return nil
				}}
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			label := "loop " + tc.name
			done := make(chan error, 1)
			go pprof.Do(ctx, pprof.Labels("test", label), func(ctx context.Context) { done <- runner.Run(ctx, tb.p, g) })

			select {
			case <-atLast:
			case <-time.After(20 * time.Second):
				prefetches, commits := g.count()
				t.Fatalf("the run never reached full-batch commit %d (%d commits, %d prefetches)", last, commits, prefetches)
			}
			// Not vacuous: the batch being committed and the prefetch hold
			// both tokens, and Run, its lease watcher and the prefetch run.
			require.Zero(t, budget.Free(), "both batches' shares held mid-commit")
			require.GreaterOrEqual(t, labelled(t, "test", label), 3, "the loop's goroutines are counted")

			tc.endRun(tb.mem, stop, func() { close(released) })
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not return")
			}
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, 2*batchSize, budget.Free(), "the whole budget is back once Run returned")
			require.Eventually(t, func() bool { return labelled(t, "test", label) == 0 }, 20*time.Second, time.Millisecond,
				"goroutines of the loop are left: %d", labelled(t, "test", label))

			prefetches, commits := g.count()
			require.Equal(t, last, commits)
			require.Equal(t, last, prefetches, "every full-batch commit overlapped a prefetch")
			c, _ := tb.mem.Checkpoint("p")
			require.Equal(t, tc.wantPos, c.Cursor.Position)
			want := make([]int64, tc.wantPos)
			for i := range want {
				want[i] = int64(i + 1)
			}
			require.Equal(t, want, tb.sink.positions(), "every event up to the checkpoint applied once, in order")
		})
	}
}
