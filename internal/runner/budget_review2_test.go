package runner_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// stopCommits serves projectors on one budget: "b" has its commits
// held until the test ends, so it keeps its room of the budget; "a"'s
// first read is a bound one (BoundReader) of `bound` events, longer than
// the room "a" took. It records, for every commit entered, how many events
// the batches in commit hold against what the budget has out.
type stopCommits struct {
	*memtest.Node
	budget  *runner.Budget
	size    int
	bound   int
	holdB   chan struct{}
	readA   chan struct{} // closed once a's bound read has been made
	oneA    sync.Once
	mu      sync.Mutex
	events  int // events of the batches in commit
	short   int // most events in commit beyond what the budget had out
	aEvents int // events a committed
	// boundReads counts the bound reads made (projectors named a...).
	boundReads int
}

func (s *stopCommits) ReadBound(ctx context.Context, projector string, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, bool, error) {
	if projector[0] != 'a' || after.Position != 0 {
		return nil, false, nil
	}
	events, err := s.Read(ctx, after, f, s.bound, buf)
	s.mu.Lock()
	s.boundReads++
	s.mu.Unlock()
	s.oneA.Do(func() { close(s.readA) })
	return events, len(events) > 0, err
}

func (s *stopCommits) Commit(ctx context.Context, req store.CommitRequest) error {
	s.mu.Lock()
	s.events += len(req.Events)
	s.short = max(s.short, s.events-(s.size-s.budget.Free()))
	if req.Projector == "a" {
		s.aEvents += len(req.Events)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.events -= len(req.Events)
		s.mu.Unlock()
	}()
	if req.Projector == "b" {
		select {
		case <-s.holdB:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Node.Commit(ctx, req)
}

// keep takes the rest of a bound read's room, and when the rest is not
// free it gives back what it holds and waits for all of it at once: "0
// when ctx ended: the batch is dropped". It is not dropped. read returns
// the batch with its events and no error, settle commits it on the lease's
// context (a graceful stop ends only the stop context, which the wait was
// on), and the batch holds none of the budget while it commits: its events
// are in memory beside the budget's whole count, on top of another
// projector's batch that holds the room it waited for.
//
// Budget 40. "b" (batch_size 30) holds a batch of 30 in a commit that does
// not end. "a" (batch_size 10) takes the last 10, its bound read returns
// 30 events, the 20 more are not free, so it gives its 10 back and waits
// for 30. Its run is stopped gracefully while it waits.
func TestReviewBudgetAStoppedKeepDropsItsBatch(t *testing.T) {
	t.Parallel()
	const size, bound = 40, 30
	mem := memtest.New()
	mem.SetSink("a", &recordingSink{})
	mem.SetSink("b", &recordingSink{})
	for range bound {
		mem.AppendCommitted("s", "A", "{}")
	}
	budget := runner.NewBudget(size)
	s := &stopCommits{Node: mem.Node("n"), budget: budget, size: size, bound: bound,
		holdB: make(chan struct{}), readA: make(chan struct{})}
	var freeB sync.Once
	releaseB := func() { freeB.Do(func() { close(s.holdB) }) }
	defer releaseB()

	bctx, bcancel := context.WithCancel(context.Background())
	defer bcancel()
	bdone := start(bctx, reviewProjector(t, "b", 30, budget), s)
	// b's run logs until it ends: it must end before the test does, even
	// when a require below fails.
	t.Cleanup(func() {
		releaseB()
		bcancel()
		<-bdone
		if free := budget.Free(); free != size {
			t.Errorf("%d of the budget of %d came back", free, size)
		}
	})
	testsupport.Until(t, "b's batch of 30 held in its commit", 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.events == 30
	})
	require.Equal(t, size-30, budget.Free(), "b holds its 30 events and nothing else")

	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	arun := start(actx, reviewProjector(t, "a", 10, budget), s)
	adone := make(chan struct{})
	go func() { <-arun; close(adone) }()
	t.Cleanup(func() { acancel(); <-adone })
	select {
	case <-s.readA:
	case <-time.After(10 * time.Second):
		t.Fatal("a never made its bound read")
	}
	// Its 10 given back while it waits for 30: the 10 are free again.
	testsupport.Until(t, "a waiting in keep for all of its bound read's room", 10*time.Second, func() bool {
		return budget.Free() == size-30
	})
	acancel() // a graceful stop of a alone
	select {
	case <-adone:
	case <-time.After(10 * time.Second):
		t.Fatal("a's run did not end with its context")
	}
	s.mu.Lock()
	short, committed := s.short, s.aEvents
	s.mu.Unlock()
	cp, _ := mem.Checkpoint("a")
	t.Logf("a committed %d events (checkpoint %s) while waiting; most events in commit beyond the budget's count: %d", committed, cp.Cursor, short)
	require.Zero(t, short, "a batch committed with %d events the budget did not count (budget %d, b holds 30)", short, size)
	require.Zero(t, committed, "keep says the batch is dropped when its wait ends with ctx; a committed %d events", committed)

}

// Two bound reads longer than their room (30 events, room 10 each, budget
// 50 of which another batch holds 30), on a budget whose rest neither can
// take: each gives back what it holds and waits for all of its room at
// once, in the semaphore's order. Neither holds room while it waits, so
// once the third batch's commit ends both commit, one after the other:
// every event applied once by each, and the whole budget back.
func TestReviewBudgetTwoLongBoundReadsDoNotWaitForEachOther(t *testing.T) {
	t.Parallel()
	const size, bound = 50, 30
	mem := memtest.New()
	sinks := map[string]*recordingSink{"a1": {}, "a2": {}, "b": {}}
	for name, sink := range sinks {
		mem.SetSink(name, sink)
	}
	for range bound {
		mem.AppendCommitted("s", "A", "{}")
	}
	budget := runner.NewBudget(size)
	s := &stopCommits{Node: mem.Node("n"), budget: budget, size: size, bound: bound,
		holdB: make(chan struct{}), readA: make(chan struct{})}
	var freeB sync.Once
	releaseB := func() { freeB.Do(func() { close(s.holdB) }) }
	defer releaseB()
	ctx, cancel := context.WithCancel(context.Background())
	var runs []<-chan error
	t.Cleanup(func() {
		releaseB()
		cancel()
		for _, d := range runs {
			<-d
		}
		if free := budget.Free(); free != size {
			t.Errorf("%d of the budget of %d came back", free, size)
		}
	})
	runs = append(runs, start(ctx, reviewProjector(t, "b", 30, budget), s))
	testsupport.Until(t, "b's batch of 30 held in its commit", 10*time.Second, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.events == 30
	})
	require.Equal(t, size-30, budget.Free(), "b holds its 30 events and nothing else (its prefetch found 20 free of the 30 it takes)")
	runs = append(runs, start(ctx, reviewProjector(t, "a1", 10, budget), s), start(ctx, reviewProjector(t, "a2", 10, budget), s))
	// The first bound read gives its 10 back and waits for 30, first in
	// the semaphore's order; the other projector then waits behind it,
	// in acquire or (if it read first) in keep, holding nothing either way.
	testsupport.Until(t, "a bound read made, and its projector waiting with nothing held", 10*time.Second, func() bool {
		s.mu.Lock()
		n := s.boundReads
		s.mu.Unlock()
		return n >= 1 && budget.Free() == size-30
	})
	releaseB()
	for _, name := range []string{"a1", "a2", "b"} {
		waitCheckpoint(t, mem, name, func(c store.Checkpoint) bool { return c.Cursor.Position == bound })
	}
	s.mu.Lock()
	require.Equal(t, 2, s.boundReads, "both first reads were bound ones")
	s.mu.Unlock()
	for name, sink := range sinks {
		require.Equal(t, bound, sink.count(), "%s applied every event", name)
		require.Empty(t, sink.duplicates(), "%s applied none twice", name)
	}
}
