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

// heldCommits holds every commit until released and records, for the
// commits in flight, their events and the slots of the buffers those
// events live in (cap: the batch's buffer, since the loop only reslices
// it), and the largest shortfall of the budget against the events held.
type heldCommits struct {
	*memtest.Node
	budget  *runner.Budget
	size    int // the budget's size
	release chan struct{}

	// bound, if set, makes the first read a bound one (BoundReader) of
	// this many events, whatever the limit: PGBackend.ReadBound reads an
	// HTTP projector's recorded batch again whole, "however many".
	bound int

	mu       sync.Mutex
	bounded  bool
	inFlight int
	events   int
	slots    int
	short    int // most events in flight beyond what the budget had out
}

func (h *heldCommits) ReadBound(ctx context.Context, projector string, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, bool, error) {
	h.mu.Lock()
	first := h.bound > 0 && !h.bounded
	h.bounded = h.bounded || first
	h.mu.Unlock()
	if !first {
		return nil, false, nil
	}
	events, err := h.Read(ctx, after, f, h.bound, buf)
	return events, len(events) > 0, err
}

func (h *heldCommits) Commit(ctx context.Context, req store.CommitRequest) error {
	h.mu.Lock()
	h.inFlight++
	h.events += len(req.Events)
	h.slots += cap(req.Events)
	h.short = max(h.short, h.events-(h.size-h.budget.Free()))
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.inFlight--
		h.events -= len(req.Events)
		h.slots -= cap(req.Events)
		h.mu.Unlock()
	}()
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return h.Node.Commit(ctx, req)
}

func (h *heldCommits) held() (batches, events, slots, short int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inFlight, h.events, h.slots, h.short
}

func reviewProjector(t *testing.T, name string, batchSize int, budget *runner.Budget) runner.Projector {
	return runner.Projector{Name: name, BatchSize: batchSize, Logger: zaptest.NewLogger(t), Budget: budget,
		Policy: runner.ErrorPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.ThenHalt}}
}

// The budget counts a batch's events, but a batch of a few events keeps
// its whole batch_size buffer unless at least trimBelow (64) slots of it
// are unused: with a batch_size under about 64 (and up to about 128), no
// small batch is ever trimmed. Then the slots the batches hold in memory
// grow with the number of projectors, not with the budget, which is what
// keep says it prevents ("holding whole buffers would make memory grow
// with the number of projectors again"). This is the scenario of
// TestBudgetHoldsManySmallBatchesAtOnce: eight projectors of batch_size 50,
// a budget of 100 events, two events each; they hold 8 x 50 = 400 slots.
// Not parallel: the buffers come from the shared eventBufs pool, which
// other tests fill with buffers of other sizes.
func TestReviewBudgetCountsTheBuffersSmallBatchesHold(t *testing.T) {
	const projectors, batchSize = 8, 50
	mem := memtest.New()
	for i := range projectors {
		mem.SetSink(fmt.Sprintf("p%d", i), &recordingSink{})
	}
	mem.AppendCommitted("s", "A", "{}", "{}")
	budget := runner.NewBudget(2 * batchSize)
	h := &heldCommits{Node: mem.Node("a"), budget: budget, size: 2 * batchSize, release: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var dones []<-chan error
	for i := range projectors {
		dones = append(dones, start(ctx, reviewProjector(t, fmt.Sprintf("p%d", i), batchSize, budget), h))
	}
	testsupport.Until(t, "every projector's small batch held in a commit at once", 10*time.Second, func() bool {
		n, _, _, _ := h.held()
		return n == projectors
	})
	_, events, slots, _ := h.held()
	close(h.release)
	require.Equal(t, 2*projectors, events)
	require.LessOrEqual(t, slots, 2*batchSize,
		"the buffers of %d batches of %d events hold %d event slots; the budget is %d events", projectors, events/projectors, slots, 2*batchSize)
	cancel()
	for _, d := range dones {
		select {
		case <-d:
		case <-time.After(10 * time.Second):
			t.Fatal("a run did not end with its context")
		}
	}
}

// Every event a batch holds is counted in the budget (keep: "a batch holds
// as many events of the budget as it has events"). keep only ever gives
// room back: a read that returns more events than the room it took keeps
// them uncounted, so the events held exceed what the budget has out.
// Two reads do: a bound read (PGBackend.ReadBound reads a recorded HTTP
// delivery again whole, "a batch_size smaller than the recorded leader's
// cuts nothing"), and a read whose batch_size exceeds the whole budget
// (room takes the budget, the read still asks for batch_size events).
func TestReviewBudgetCountsEveryEventABatchHolds(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		batchSize, size, bound int
		events                 int
	}{
		// 30 events fit in the budget of 40: counting them is possible.
		{name: "a bound read longer than batch_size", batchSize: 10, size: 40, bound: 30, events: 30},
		// Reading no more than the room taken would keep the bound.
		{name: "a batch_size larger than the budget", batchSize: 10, size: 5, events: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mem := memtest.New()
			mem.SetSink("p", &recordingSink{})
			for range tc.events {
				mem.AppendCommitted("s", "A", "{}")
			}
			budget := runner.NewBudget(tc.size)
			h := &heldCommits{Node: mem.Node("a"), budget: budget, size: tc.size, release: make(chan struct{}), bound: tc.bound}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := start(ctx, reviewProjector(t, "p", tc.batchSize, budget), h)
			testsupport.Until(t, "a batch held in a commit", 10*time.Second, func() bool {
				n, _, _, _ := h.held()
				return n == 1
			})
			_, events, _, short := h.held()
			close(h.release)
			require.Greater(t, events, 0)
			require.Zero(t, short, "a batch of %d events in flight, %d of them not counted in the budget of %d", events, short, tc.size)
			waitCheckpoint(t, mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == int64(tc.events) })
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the run did not end with its context")
			}
			require.Equal(t, tc.size, budget.Free(), "the whole budget came back")
		})
	}
}
