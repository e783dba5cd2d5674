package runner

import (
	"context"
	"testing"

	"github.com/projectord/projectord/internal/store"
)

// A batch keeps of the budget and of its buffer only what it read: a few
// events read into a batch_size buffer are copied into their own, and the
// rest of the budget a read took room for comes back at once.
func TestBatchKeepsWhatItRead(t *testing.T) {
	b := NewBudget(1000)
	held, ok := b.tryAcquire(500)
	if !ok || held != 500 || b.free() != 500 {
		t.Fatalf("room for a read: held %d, ok %v, free %d", held, ok, b.free())
	}
	buf := getBuf(500)
	buf = append(buf, store.Event{Cursor: store.Cursor{Position: 1}}, store.Event{Cursor: store.Cursor{Position: 2}}, store.Event{Cursor: store.Cursor{Position: 3}})
	bt := &batch{budget: b, held: held, pooled: true, events: buf}
	bt.keep(context.Background())
	if bt.held != 3 || b.free() != 997 {
		t.Fatalf("after keep: held %d, free %d; want 3 and 997", bt.held, b.free())
	}
	if cap(bt.events) != 3 || bt.pooled || bt.events[2].Position != 3 {
		t.Fatalf("after keep: cap %d, pooled %v, events %v; want its own buffer of the 3 events", cap(bt.events), bt.pooled, bt.events)
	}
	bt.Release()
	bt.Release() // a second Release gives nothing back twice
	if b.free() != 1000 {
		t.Fatalf("after Release: free %d, want 1000", b.free())
	}

	// A full batch keeps its buffer and its whole share.
	held, _ = b.tryAcquire(4)
	full := &batch{budget: b, held: held, pooled: true, events: make([]store.Event, 4)}
	full.keep(context.Background())
	if full.held != 4 || !full.pooled || b.free() != 996 {
		t.Fatalf("a full batch: held %d, pooled %v, free %d", full.held, full.pooled, b.free())
	}
	full.Release()

	// A read larger than the whole budget takes all of it, not forever.
	small := NewBudget(10)
	if held, ok := small.tryAcquire(500); !ok || held != 10 {
		t.Fatalf("a read past the budget: held %d, ok %v; want the whole budget", held, ok)
	}
}
