package runner

import (
	"context"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"

	"github.com/projectord/projectord/internal/store"
)

// Budget bounds how many events all projectors of a replica hold in memory
// at once. Without it, memory would grow with the number of projectors
// catching up together; with it, it grows with the pool size. A nil Budget
// is unlimited.
//
// It counts events, not batches: a read takes room for a whole batch
// before it reads (it cannot know how many events it will find), and gives
// back what it did not fill once it has read (batch.keep). At the live tail
// a head change gives every projector a batch of a few events; counted as
// whole batches, 100 projectors would wait for 16 tokens and commit in a
// dozen small groups, each paying its own transaction, instead of sharing
// one or two (issue #16's live-load benchmark: 290 against 80 transactions
// a second, and about a third less CPU).
type Budget struct {
	sem  *semaphore.Weighted
	size int64
	used atomic.Int64 // held, for free
}

// NewBudget returns a budget of n events.
func NewBudget(n int) *Budget {
	size := int64(max(1, n))
	return &Budget{sem: semaphore.NewWeighted(size), size: size}
}

// room is what a read of up to n events takes: n, or the whole budget when
// it is smaller (a read must be able to start).
func (b *Budget) room(n int) int64 {
	return min(int64(max(1, n)), b.size)
}

// acquire takes room for a read of up to n events, waiting for it.
func (b *Budget) acquire(ctx context.Context, n int) (int64, bool) {
	if b == nil {
		return 0, ctx.Err() == nil
	}
	w := b.room(n)
	if err := b.sem.Acquire(ctx, w); err != nil {
		return 0, false
	}
	b.used.Add(w)
	return w, true
}

// tryAcquire takes room for a read of up to n events only if it is free:
// prefetching is an optimisation that must never wait.
func (b *Budget) tryAcquire(n int) (int64, bool) {
	if b == nil {
		return 0, true
	}
	w := b.room(n)
	if !b.sem.TryAcquire(w) {
		return 0, false
	}
	b.used.Add(w)
	return w, true
}

// acquireExact takes n events of the budget (at most its size), waiting.
func (b *Budget) acquireExact(ctx context.Context, n int64) (int64, bool) {
	n = min(n, b.size)
	if err := b.sem.Acquire(ctx, n); err != nil {
		return 0, false
	}
	b.used.Add(n)
	return n, true
}

// tryAcquireExact takes n events of the budget only if they are free.
func (b *Budget) tryAcquireExact(n int64) (int64, bool) {
	if !b.sem.TryAcquire(n) {
		return 0, false
	}
	b.used.Add(n)
	return n, true
}

func (b *Budget) release(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
		b.sem.Release(n)
	}
}

// free is how many events of the budget are not held, for tests that
// check every batch gave its share back.
func (b *Budget) free() int { return int(b.size - b.used.Load()) }

// eventBufs recycles batch buffers across projectors; idle projectors hold
// none, and the garbage collector may drop pooled ones.
var eventBufs sync.Pool

func getBuf(n int) []store.Event {
	if p, ok := eventBufs.Get().(*[]store.Event); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]store.Event, 0, n)
}

func putBuf(b []store.Event) {
	if cap(b) == 0 {
		return
	}
	clear(b) // drop references to event payloads
	b = b[:0]
	eventBufs.Put(&b)
}
