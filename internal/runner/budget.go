package runner

import (
	"context"
	"sync"

	"github.com/projectord/projectord/internal/store"
)

// Budget bounds how many batches all projectors of a replica hold in memory
// at once. Without it, memory would grow with the number of projectors
// catching up together; with it, it grows with the pool size. A nil Budget
// is unlimited.
type Budget struct{ tokens chan struct{} }

// NewBudget returns a budget of n batches.
func NewBudget(n int) *Budget {
	return &Budget{tokens: make(chan struct{}, max(1, n))}
}

func (b *Budget) acquire(ctx context.Context) bool {
	if b == nil {
		return ctx.Err() == nil
	}
	select {
	case b.tokens <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// tryAcquire takes a token only if one is free: prefetching is an
// optimisation that must never wait.
func (b *Budget) tryAcquire() bool {
	if b == nil {
		return true
	}
	select {
	case b.tokens <- struct{}{}:
		return true
	default:
		return false
	}
}

func (b *Budget) release() {
	if b != nil {
		<-b.tokens
	}
}

// free is how many tokens are not held, for tests that check every batch
// gave its token back.
func (b *Budget) free() int { return cap(b.tokens) - len(b.tokens) }

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
