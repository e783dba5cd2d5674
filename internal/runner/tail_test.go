package runner_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// tailCounts counts what a Tail did.
type tailCounts struct{ served, own, shared atomic.Int64 }

func (c *tailCounts) observe(r runner.TailRead) {
	switch r {
	case runner.TailServed:
		c.served.Add(1)
	case runner.TailOwn:
		c.own.Add(1)
	case runner.TailShared:
		c.shared.Add(1)
	}
}

// countingSource counts the queries a Tail passes to the source, and can
// be made to fail.
type countingSource struct {
	src   runner.TailSource
	reads atomic.Int64
	fail  atomic.Pointer[error]
}

func (s *countingSource) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	s.reads.Add(1)
	if err := s.fail.Load(); err != nil {
		return buf[:0], *err
	}
	return s.src.Read(ctx, after, f, limit, buf)
}

// follow reads as the runner's loop does, through r, until stop is closed
// and the head is reached: it notes the head, reads, and moves its cursor
// to the last event, or to the noted head when the batch is short. It
// returns every event it was given, in order.
func follow(ctx context.Context, r interface {
	Read(context.Context, store.Cursor, store.Filter, int, []store.Event) ([]store.Event, error)
}, heads func() (store.Cursor, <-chan struct{}), f store.Filter, limit int, from store.Cursor, stop <-chan struct{}, slow time.Duration) ([]store.Event, error) {
	var got []store.Event
	cur := from
	buf := make([]store.Event, 0, limit)
	for {
		head, changed := heads()
		events, err := r.Read(ctx, cur, f, limit, buf)
		if err != nil {
			return got, err
		}
		got = append(got, events...)
		to := cur
		if len(events) > 0 {
			to = events[len(events)-1].Cursor
		}
		full := len(events) == limit
		if !full && to.Less(head) {
			to = head
		}
		cur = to
		if slow > 0 {
			t := time.NewTimer(slow) // a slow handler, not synchronisation
			<-t.C
		}
		if full || cur.Less(head) {
			continue
		}
		select {
		case <-changed:
		case <-stop:
			// Writers are done: one more pass reaches the final head.
			if h, _ := heads(); !cur.Less(h) {
				return got, nil
			}
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

// writeGappy runs writers that hold transactions open for a while and roll
// some back, so that positions commit out of order and leave gaps.
func writeGappy(m *memtest.Memory, writers, txs int, seed uint64) {
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			types := []string{"A", "B", "C", "D"}
			for i := range txs {
				tx := m.Begin()
				for k := range 1 + rng.IntN(4) {
					stream := fmt.Sprintf("%s-%d", []string{"order", "cart"}[rng.IntN(2)], rng.IntN(20))
					tx.Append(stream, types[rng.IntN(len(types))], fmt.Sprintf(`{"w":%d,"i":%d,"k":%d}`, w, i, k))
				}
				if rng.IntN(3) == 0 {
					// Holding the transaction open while others commit.
					time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
				}
				if rng.IntN(10) == 0 {
					tx.Rollback()
				} else {
					tx.Commit()
				}
			}
		})
	}
	wg.Wait()
}

// oracle is every visible event passing f, in cursor order.
func oracle(t *testing.T, n *memtest.Node, f store.Filter) []store.Event {
	t.Helper()
	all, err := n.Read(t.Context(), store.Cursor{}, f, 1<<30, nil)
	require.NoError(t, err)
	return all
}

func cursors(es []store.Event) []store.Cursor {
	out := make([]store.Cursor, len(es))
	for i := range es {
		out[i] = es[i].Cursor
	}
	return out
}

// Readers that share one Tail under writers committing out of order each
// get exactly the events a reader of their own gets: none skipped, none
// twice, in cursor order, whatever their filter, batch size or speed; and
// most of their reads are served from the window, not by the source.
func TestTailReadersGetExactlyTheirEvents(t *testing.T) {
	for round := range 2 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			m := memtest.New()
			n := m.Node("a")
			// Some history first, so that readers starting at zero catch up
			// on their own before they join the window.
			writeGappy(m, 2, 20, uint64(round)+100)
			src := &countingSource{src: n}
			var counts tailCounts
			tail := runner.NewTail(runner.TailConfig{Source: src, Heads: n.Head, Context: t.Context(), Limit: 16, Capacity: 64, Observe: counts.observe})
			filters := []store.Filter{
				{}, {EventTypes: []string{"A"}}, {EventTypes: []string{"B", "C"}}, {StreamPrefix: "order-"},
				{StreamPrefix: "cart-1", EventTypes: []string{"D", "A"}}, {PositionFloor: 40}, {EventTypes: []string{"nothing"}},
			}
			type reader struct {
				f     store.Filter
				limit int
				from  store.Cursor
				slow  time.Duration
			}
			var readers []reader
			head, _ := n.Head()
			for i, f := range filters {
				readers = append(readers,
					reader{f: f, limit: 2 + i%5, from: store.Cursor{}},
					reader{f: f, limit: 16, from: head},
					reader{f: f, limit: 3, from: store.Cursor{}, slow: 200 * time.Microsecond})
			}
			stop := make(chan struct{})
			results := make([][]store.Event, len(readers))
			errs := make([]error, len(readers))
			var wg sync.WaitGroup
			for i, r := range readers {
				wg.Go(func() {
					results[i], errs[i] = follow(t.Context(), tail, n.Head, r.f, r.limit, r.from, stop, r.slow)
				})
			}
			writeGappy(m, 4, 40, uint64(round))
			close(stop)
			wg.Wait()
			for i, r := range readers {
				require.NoError(t, errs[i])
				want := oracle(t, n, r.f)
				if !r.from.IsZero() {
					var after []store.Event
					for _, e := range want {
						if r.from.Less(e.Cursor) {
							after = append(after, e)
						}
					}
					want = after
				}
				require.Equal(t, cursors(want), cursors(results[i]), "reader %d (filter %+v, limit %d)", i, r.f, r.limit)
			}
			t.Logf("reads: served %d, own %d, shared %d; source queries %d", counts.served.Load(), counts.own.Load(), counts.shared.Load(), src.reads.Load())
			require.Positive(t, counts.served.Load(), "no read was served from the window")
			require.Less(t, src.reads.Load(), counts.served.Load()+counts.own.Load(), "the source answered as many queries as there were reads")
		})
	}
}

// A reader far behind the window reads on its own, and joins the window
// once it reaches it; a window that outgrows its capacity drops its oldest
// events, and a reader that needed them reads on its own, missing nothing.
func TestTailCapacityAndJoining(t *testing.T) {
	m := memtest.New()
	n := m.Node("a")
	src := &countingSource{src: n}
	var counts tailCounts
	tail := runner.NewTail(runner.TailConfig{Source: src, Heads: n.Head, Context: t.Context(), Limit: 4, Capacity: 8, Observe: counts.observe})
	for i := range 30 {
		m.AppendCommitted(fmt.Sprintf("s-%d", i%3), "A", "{}")
	}
	head, _ := n.Head()
	// At the head: served from the (empty) window at once.
	events, err := tail.Read(t.Context(), head, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Empty(t, events)
	require.EqualValues(t, 1, counts.served.Load())
	// Behind: its own read.
	events, err = tail.Read(t.Context(), store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, events, 10)
	require.EqualValues(t, 1, counts.own.Load())

	// Twelve more: the window extends three times and keeps the newest 8.
	for i := range 12 {
		m.AppendCommitted(fmt.Sprintf("s-%d", i%3), "B", "{}")
	}
	events, err = tail.Read(t.Context(), head, store.Filter{EventTypes: []string{"B"}}, 100, nil)
	require.NoError(t, err)
	require.Len(t, events, 12, "a reader at the window's start gets every event it extends over")
	require.EqualValues(t, 3, counts.shared.Load())
	// Its start moved: a reader at the old head now reads on its own.
	own := counts.own.Load()
	events, err = tail.Read(t.Context(), head, store.Filter{}, 100, nil)
	require.NoError(t, err)
	require.Len(t, events, 12)
	require.Equal(t, own+1, counts.own.Load())
}

// A reader whose cursor is past the window's end (its own read saw newer
// events) is covered by one extension; one far past it restarts the
// window there instead of reading what lies between.
func TestTailCursorPastTheWindow(t *testing.T) {
	m := memtest.New()
	n := m.Node("a")
	src := &countingSource{src: n}
	tail := runner.NewTail(runner.TailConfig{Source: src, Heads: n.Head, Context: t.Context(), Limit: 4, Capacity: 8})
	start, _ := n.Head()
	_, err := tail.Read(t.Context(), start, store.Filter{}, 10, nil) // the window starts at the empty head
	require.NoError(t, err)
	for range 20 {
		m.AppendCommitted("s", "A", "{}")
	}
	all := oracle(t, n, store.Filter{})
	// Far past: more than one read's worth lies between.
	reads := src.reads.Load()
	events, err := tail.Read(t.Context(), all[15].Cursor, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Equal(t, cursors(all[16:]), cursors(events))
	require.LessOrEqual(t, src.reads.Load()-reads, int64(2), "read the whole range in between")
	// The reader that was at the start reads on its own now, missing nothing.
	events, err = tail.Read(t.Context(), start, store.Filter{}, 100, nil)
	require.NoError(t, err)
	require.Equal(t, cursors(all), cursors(events))
}

// A failed extending read fails the reads waiting for it, not for ever:
// the next read extends again. A reader that stops while waiting returns
// at once.
func TestTailReadErrorsAndCancel(t *testing.T) {
	m := memtest.New()
	n := m.Node("a")
	src := &countingSource{src: n}
	tail := runner.NewTail(runner.TailConfig{Source: src, Heads: n.Head, Context: t.Context(), Limit: 4, Capacity: 8})
	head, _ := n.Head()
	_, err := tail.Read(t.Context(), head, store.Filter{}, 10, nil)
	require.NoError(t, err)
	m.AppendCommitted("s", "A", "{}", "{}")
	boom := errors.New("boom")
	src.fail.Store(&boom)
	_, err = tail.Read(t.Context(), head, store.Filter{}, 10, nil)
	require.ErrorIs(t, err, boom)
	src.fail.Store(nil)
	events, err := tail.Read(t.Context(), head, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, events, 2)

	// A source that does not answer: the waiting reader's own stop ends its wait.
	block := &blockingSource{started: make(chan struct{}), release: make(chan struct{})}
	defer close(block.release)
	tail = runner.NewTail(runner.TailConfig{Source: block, Heads: n.Head, Context: t.Context(), Limit: 4, Capacity: 8})
	h, _ := n.Head()
	_, err = tail.Read(t.Context(), h, store.Filter{}, 10, nil) // starts the window at the head: no query
	require.NoError(t, err)
	m.AppendCommitted("s", "A", "{}")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := tail.Read(ctx, h, store.Filter{}, 10, nil)
		done <- err
	}()
	<-block.started
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
}

type blockingSource struct {
	once    sync.Once
	started chan struct{}
	release chan struct{}
}

func (b *blockingSource) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	b.once.Do(func() { close(b.started) })
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return buf[:0], errors.New("released")
}

// Advance extends a window in use before the projectors hear of the new
// head, so their reads are served without waiting for a query; a window
// nobody was served from since it last moved is left alone.
func TestTailAdvance(t *testing.T) {
	m := memtest.New()
	n := m.Node("a")
	src := &countingSource{src: n}
	var counts tailCounts
	tail := runner.NewTail(runner.TailConfig{Source: src, Heads: n.Head, Context: t.Context(), Limit: 10, Capacity: 40, Observe: counts.observe})
	m.AppendCommitted("s", "A", "{}")
	head, _ := n.Head()
	tail.Advance(t.Context(), head) // not started: nothing to do
	require.Zero(t, src.reads.Load())
	_, err := tail.Read(t.Context(), head, store.Filter{}, 10, nil) // starts the window and uses it
	require.NoError(t, err)

	m.AppendCommitted("s", "A", "{}", "{}")
	next, _ := n.Head()
	tail.Advance(t.Context(), next)
	require.EqualValues(t, 1, src.reads.Load(), "a window in use is extended to the new head")
	events, err := tail.Read(t.Context(), head, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, events, 2)
	require.EqualValues(t, 1, src.reads.Load(), "the read after the head moved needed no query")

	// Moved, and not served from since: another head change does not extend it.
	tail.Advance(t.Context(), next)
	require.EqualValues(t, 1, src.reads.Load())
	m.AppendCommitted("s", "A", "{}")
	unused, _ := n.Head()
	// The read above was served from the moved window: in use again.
	tail.Advance(t.Context(), unused)
	require.EqualValues(t, 2, src.reads.Load())
	m.AppendCommitted("s", "A", "{}")
	last, _ := n.Head()
	tail.Advance(t.Context(), last) // nobody read since the last move
	require.EqualValues(t, 2, src.reads.Load())
}

// Poll lets the watcher find the head with the window's own read while the
// window is in use: one query per poll, not a head query and a read. It
// leaves the head to the watcher's query when the window is not in use,
// when the read was full (the head lies further on), or when the read
// outlasts the poll's context.
func TestTailPoll(t *testing.T) {
	m := memtest.New()
	n := m.Node("a")
	src := &countingSource{src: n}
	tail := runner.NewTail(runner.TailConfig{Source: src, Heads: n.Head, Context: t.Context(), Limit: 4, Capacity: 16})
	_, _, handled, err := tail.Poll(t.Context())
	require.NoError(t, err)
	require.False(t, handled, "not started")
	m.AppendCommitted("s", "A", "{}")
	head, _ := n.Head()
	_, err = tail.Read(t.Context(), head, store.Filter{}, 10, nil) // starts the window at the head and uses it
	require.NoError(t, err)

	m.AppendCommitted("s", "A", "{}", "{}")
	want, _ := n.Head()
	got, ok, handled, err := tail.Poll(t.Context())
	require.NoError(t, err)
	require.True(t, handled)
	require.True(t, ok)
	require.Equal(t, want, got, "the head as the window's read found it")
	reads := src.reads.Load()
	events, err := tail.Read(t.Context(), head, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, events, 2)
	require.Equal(t, reads, src.reads.Load(), "the events were fetched by the poll")

	_, _, handled, err = tail.Poll(t.Context())
	require.NoError(t, err)
	require.True(t, handled, "the read above used the window")
	_, _, handled, err = tail.Poll(t.Context())
	require.NoError(t, err)
	require.False(t, handled, "nobody read since the last poll")

	// A full read: the head lies further on, for the watcher to query.
	_, err = tail.Read(t.Context(), want, store.Filter{}, 10, nil)
	require.NoError(t, err)
	for range 6 {
		m.AppendCommitted("s", "A", "{}")
	}
	_, _, handled, err = tail.Poll(t.Context())
	require.NoError(t, err)
	require.False(t, handled, "a full read does not know the head")

	// A failed read is the poll's error.
	last, _ := n.Head()
	_, err = tail.Read(t.Context(), last, store.Filter{}, 10, nil)
	require.NoError(t, err)
	m.AppendCommitted("s", "A", "{}")
	boom := errors.New("boom")
	src.fail.Store(&boom)
	_, _, handled, err = tail.Poll(t.Context())
	require.True(t, handled)
	require.ErrorIs(t, err, boom)
	src.fail.Store(nil)

	// A read that outlasts the poll: not handled, the watcher queries.
	block := &blockingSource{started: make(chan struct{}), release: make(chan struct{})}
	defer close(block.release)
	tail = runner.NewTail(runner.TailConfig{Source: block, Heads: n.Head, Context: t.Context(), Limit: 4, Capacity: 16})
	h, _ := n.Head()
	_, err = tail.Read(t.Context(), h, store.Filter{}, 10, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-block.started; cancel() }()
	_, _, handled, err = tail.Poll(ctx)
	require.NoError(t, err)
	require.False(t, handled)
}
