package runner

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/projectord/projectord/internal/store"
)

// Tail shares reads among the projectors at the live tail of the source
// (docs/architecture.md, "Shared reads"). Without it, every head change
// wakes every projector and each runs its own read query: reads grow as
// projectors x head changes. With it, one gap-safe read, unfiltered, per
// head change serves them all: it keeps the most recent events in a window
// and answers each projector's Read from it, filtered in memory by the
// projector's own filter (store.Filter.Matches, which means what the read
// query's WHERE clause means).
//
// The window holds every event in the cursor range (start, end], in cursor
// order. It only ever grows at end, by reads after end, and shrinks at
// start, by dropping its oldest events, so that invariant holds by
// construction. A Read after a cursor inside the window is answered from
// it; one after a cursor before the window (a projector catching up, or
// one that fell behind) reads on its own, as without a Tail, until it
// reaches the window: a slow projector never holds the others back, and
// the window's memory is bounded by its capacity, not by the number of
// projectors.
//
// The horizon rule is that of every read: the window is extended only by
// reads of the source, which stop below the xmin horizon, so no event can
// later appear inside (start, end]. A Read it answers keeps the reader
// contract (EventReader.Read): a batch shorter than limit holds every
// matching event up to the head noted before the call, because the window
// is first extended to at least the head current at the call.
type Tail struct {
	src      TailSource
	heads    func() (store.Cursor, <-chan struct{})
	ctx      context.Context
	limit    int // events per extending read
	capacity int // most events held
	observe  func(TailRead)

	mu      sync.Mutex
	started bool
	start   store.Cursor
	end     store.Cursor
	events  []store.Event
	// used: a read was served from the window since it last moved.
	used bool
	// fetch is the extending read in flight, nil when none is; buf is
	// the one it reads into (its events are copied into the window).
	fetch *tailFetch
	buf   []store.Event
}

// TailSource reads the source: the reads a Tail makes for itself (with the
// zero filter) and those it passes on for projectors behind the window.
type TailSource interface {
	Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error)
}

// TailRead is what a Tail did for one read, for metrics.
type TailRead int

// What a Tail did for one read.
const (
	// TailServed is a projector's read answered from the window: no query.
	TailServed TailRead = iota
	// TailOwn is a projector's read of its own, from before the window.
	TailOwn
	// TailShared is one query extending the window, for every projector.
	TailShared
)

// TailConfig configures a Tail.
type TailConfig struct {
	// Source is what the Tail reads.
	Source TailSource
	// Heads is the replica watcher's Head: the newest readable cursor
	// known, which the window is extended to before answering a read.
	Heads func() (store.Cursor, <-chan struct{})
	// Context bounds every extending read; it ends when the replica stops.
	Context context.Context
	// Limit is how many events one extending read takes; at least the
	// largest batch size, so that one read can fill any projector's batch.
	Limit int
	// Capacity is the most events the window holds (at least Limit).
	Capacity int
	// Observe, if set, is told what each read did. It must not block.
	Observe func(TailRead)
}

// tailFetch is one extending read: done is closed once it has ended, and
// err is then its error.
type tailFetch struct {
	done chan struct{}
	err  error
	full bool // the read returned as many events as it asked for
}

// NewTail returns a Tail over c.Source. Its window starts empty at the
// head current when it answers its first read.
func NewTail(c TailConfig) *Tail {
	limit := max(c.Limit, 1)
	if c.Context == nil {
		c.Context = context.Background()
	}
	return &Tail{src: c.Source, heads: c.Heads, ctx: c.Context, limit: limit, capacity: max(c.Capacity, limit), observe: c.Observe}
}

// Read implements EventReader.Read: from the window for a cursor inside
// it, extending the window to the current head first; with a read of its
// own (passed on to the source) for a cursor before it.
func (t *Tail) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	// Noted before anything is looked at: the caller noted its head
	// earlier still, so covering this one covers the caller's.
	head, _ := t.heads()
	for extended := false; ; extended = true {
		t.mu.Lock()
		if !t.started {
			// An empty range is trivially complete: the window can start
			// anywhere. Here, projectors at the head join it at once.
			t.start, t.end, t.started = head, head, true
		}
		if after.Less(t.start) {
			t.mu.Unlock()
			t.note(TailOwn)
			return t.src.Read(ctx, after, f, limit, buf)
		}
		if t.end.Less(after) && extended {
			// Still past the window after extending it once: more than a
			// read's worth of events lies between (a checkpoint another
			// replica moved, say). Start again from the cursor rather than
			// read a range no one here needs. (A cursor just past the end,
			// from a read of its own that saw newer events than the
			// window, is covered by the one extension, which the others
			// in the window need next anyway.)
			t.restart(after)
		}
		out, full := t.serve(after, f, limit, buf)
		if full || (!t.end.Less(head) && !t.end.Less(after)) {
			t.used = true
			t.mu.Unlock()
			t.note(TailServed)
			return out, nil
		}
		fetch := t.extend(head)
		t.mu.Unlock()
		select {
		case <-fetch.done:
		case <-ctx.Done():
			return buf[:0], ctx.Err()
		}
		if fetch.err != nil {
			return buf[:0], fmt.Errorf("error reading events after %s (shared read): %w", after, fetch.err)
		}
		// The window moved: serve again, from the top (after may now be
		// before its start, if the new events pushed old ones out).
	}
}

// serve copies up to limit events of the window after `after` that pass f
// into buf and reports whether it found limit of them. The caller holds mu.
func (t *Tail) serve(after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, bool) {
	out := buf[:0]
	i := sort.Search(len(t.events), func(i int) bool { return after.Less(t.events[i].Cursor) })
	for ; i < len(t.events); i++ {
		if !f.Matches(&t.events[i]) {
			continue
		}
		// The event's payload is shared with every projector it is
		// served to; sinks only read it.
		out = append(out, t.events[i])
		if len(out) == limit {
			return out, true
		}
	}
	return out, false
}

// restart empties the window at cursor c. The caller holds mu.
func (t *Tail) restart(c store.Cursor) {
	clear(t.events)
	t.events = t.events[:0]
	t.start, t.end = c, c
}

// Advance extends the window to head, a head the watcher has just read
// and not yet told the projectors about, if the window is in use (a read
// was served from it since it last moved). The projectors woken by the
// new head then find their events in the window at once, rather than all
// waking to wait for the one read and waking again when it is done. It
// returns once the read ended, or ctx did, or at once when there is
// nothing to do. ctx only bounds the wait: a read still running then
// goes on, and the projectors woken meanwhile wait for it in Read, as
// they would without Advance. A failed read is left to the projectors'
// reads, which extend the window themselves.
func (t *Tail) Advance(ctx context.Context, head store.Cursor) {
	t.mu.Lock()
	if !t.started || !t.used || !t.end.Less(head) {
		t.mu.Unlock()
		return
	}
	f := t.extend(head)
	t.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
	}
}

// Poll extends a window in use by one read and reports the source's head
// as that read found it, for the watcher to use instead of a head query
// of its own: at the live tail the one read per poll interval then both
// finds the new head and fetches what lies before it. handled is false
// when the watcher must query the head itself: the window is not in use
// (no read was served from it since it last moved), a read is already in
// flight, this one was full (the head lies further on), or ctx ended
// first (the read carries on for the projectors). A failed read is
// handled, with its error.
func (t *Tail) Poll(ctx context.Context) (head store.Cursor, ok, handled bool, err error) {
	t.mu.Lock()
	if !t.started || !t.used || t.fetch != nil {
		t.mu.Unlock()
		return store.Cursor{}, false, false, nil
	}
	noted, _ := t.heads()
	f := t.extend(noted)
	t.mu.Unlock()
	select {
	case <-f.done:
	case <-ctx.Done():
		return store.Cursor{}, false, false, nil
	}
	if f.err != nil {
		return store.Cursor{}, false, true, f.err
	}
	if f.full {
		return store.Cursor{}, false, false, nil
	}
	// A short read returned every event after the window's end below the
	// horizon: the newest of them, or the end itself when there was none,
	// is the newest readable cursor.
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.end, !t.end.IsZero(), true, nil
}

// extend returns the extending read in flight, starting one if none is.
// noted is a head read before the call: a short read covers up to it.
// The caller holds mu.
func (t *Tail) extend(noted store.Cursor) *tailFetch {
	if t.fetch != nil {
		return t.fetch
	}
	f := &tailFetch{done: make(chan struct{})}
	t.fetch = f
	from := t.end
	// In use again only once a read is served from the moved window.
	t.used = false
	// The read runs on the Tail's context, not a caller's: a projector
	// that stops while waiting for it must not cut it short for the others.
	// It ends by itself, bounded by the source's query timeout.
	go func() {
		events, err := t.src.Read(t.ctx, from, store.Filter{}, t.limit, t.buf)
		t.note(TailShared)
		t.mu.Lock()
		defer t.mu.Unlock()
		f.err, f.full = err, len(events) == t.limit
		t.fetch = nil
		close(f.done)
		if err != nil || t.end != from {
			// A failed read adds nothing; a restart meanwhile made it stale.
			return
		}
		t.append(events, len(events) == t.limit, noted)
		clear(events)
		t.buf = events[:0]
	}()
	return f
}

// append adds the events of one read after end. A full read covers the
// range up to its last event only; a short one every event up to the head
// noted before it, too. The caller holds mu.
func (t *Tail) append(events []store.Event, full bool, noted store.Cursor) {
	t.events = append(t.events, events...)
	if len(events) > 0 && t.end.Less(events[len(events)-1].Cursor) {
		t.end = events[len(events)-1].Cursor
	}
	if !full && t.end.Less(noted) {
		t.end = noted
	}
	if drop := len(t.events) - t.capacity; drop > 0 {
		// The oldest go: whoever still needs them reads on its own.
		t.start = t.events[drop-1].Cursor
		clear(t.events[:drop])
		t.events = t.events[drop:]
		if cap(t.events) < t.capacity+t.limit {
			// Moved to a fresh array now and then rather than copied down
			// on every read: the window's array would otherwise only grow
			// at its end. Amortised, each event is copied once more.
			t.events = append(make([]store.Event, 0, 2*t.capacity+t.limit), t.events...)
		}
	}
}

func (t *Tail) note(r TailRead) {
	if t.observe != nil {
		t.observe(r)
	}
}
