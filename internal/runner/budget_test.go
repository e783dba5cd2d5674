package runner_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// gatedCommits holds every commit until released, counting how many are
// held at once.
type gatedCommits struct {
	*memtest.Node
	release chan struct{}

	mu       sync.Mutex
	inFlight int
	events   int // events held by the commits in flight
}

func (g *gatedCommits) Commit(ctx context.Context, req store.CommitRequest) error {
	g.mu.Lock()
	g.inFlight++
	g.events += len(req.Events)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inFlight--
		g.events -= len(req.Events)
		g.mu.Unlock()
	}()
	select {
	case <-g.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Node.Commit(ctx, req)
}

func (g *gatedCommits) held() (batches, events int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight, g.events
}

// At the live tail a head change gives every projector a batch of a few
// events. The budget counts events, so a budget of two full batches holds
// the small batches of many projectors at once, and they can commit
// together (group commit); counted as whole batches it held two, and 100
// projectors committed in a dozen small groups (issue #16). What the
// batches hold stays within the budget, and all of it comes back.
func TestBudgetHoldsManySmallBatchesAtOnce(t *testing.T) {
	t.Parallel()
	const projectors, batchSize = 8, 50
	mem := memtest.New()
	for i := range projectors {
		mem.SetSink(fmt.Sprintf("p%d", i), &recordingSink{})
	}
	mem.AppendCommitted("s", "A", "{}", "{}") // two events: a small batch for each projector
	budget := runner.NewBudget(2 * batchSize)
	g := &gatedCommits{Node: mem.Node("a"), release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dones []<-chan error
	for i := range projectors {
		p := runner.Projector{Name: fmt.Sprintf("p%d", i), BatchSize: batchSize, Logger: zaptest.NewLogger(t), Budget: budget,
			Policy: runner.ErrorPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.ThenHalt}}
		dones = append(dones, start(ctx, p, g))
	}
	testsupport.Until(t, "every projector's small batch held in a commit at once", 10*time.Second, func() bool {
		n, _ := g.held()
		return n == projectors
	})
	_, events := g.held()
	require.Equal(t, 2*projectors, events)
	// The batches in commit hold their events of the budget, and nothing
	// else but, perhaps, the room of one prefetch read in flight.
	require.LessOrEqual(t, budget.Free(), 2*batchSize-2*projectors, "the batches' events are counted")
	require.GreaterOrEqual(t, budget.Free(), 2*batchSize-2*projectors-batchSize,
		"the batches hold their events of the budget, and at most one read in flight a whole batch")
	close(g.release)
	for i := range projectors {
		waitCheckpoint(t, mem, fmt.Sprintf("p%d", i), func(c store.Checkpoint) bool { return c.Cursor.Position == 2 })
	}
	cancel()
	for _, d := range dones {
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			t.Fatal("a run did not end with its context")
		}
	}
	require.Equal(t, 2*batchSize, budget.Free(), "the whole budget came back")
}

// A budget smaller than batch_size makes every read smaller than
// batch_size. Such a read that comes back full is not the end of what is
// there: taken for short, it would move the checkpoint to the head over
// the events it did not read. Every event is applied, once.
func TestBudgetSmallerThanABatchSkipsNothing(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	for i := range 30 {
		tb.mem.AppendCommitted(fmt.Sprintf("s-%d", i), "A", "{}")
	}
	budget := runner.NewBudget(5)
	tb.p.BatchSize, tb.p.Budget = 10, budget
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := start(ctx, tb.p, tb.mem.Node("a"))
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 30 })
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not end with its context")
	}
	require.Equal(t, 30, tb.sink.count(), "every event applied")
	require.Empty(t, tb.sink.duplicates(), "none applied twice")
	require.Equal(t, 5, budget.Free(), "the whole budget came back")
}
