package runner

import (
	"context"
	"fmt"

	"github.com/projectord/projectord/internal/httpsink"
	"github.com/projectord/projectord/internal/store"
)

// AddHTTPProjector registers a projector whose sink is an HTTP receiver:
// t is the database (database.url) holding its checkpoint. Its batches
// commit alone, never in a group: a group's transaction cannot wait for a
// receiver.
func (b *PGBackend) AddHTTPProjector(name string, t *store.Target, s *httpsink.Sink) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.targets[name], b.http[name] = t, s
	delete(b.sinks, name)
}

func (b *PGBackend) httpSink(name string) *httpsink.Sink {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.http[name]
}

var _ BatchBounder = (*PGBackend)(nil)

// Bound implements BatchBounder for HTTP projectors (httpsink.Sink.Bound).
func (b *PGBackend) Bound(projector string, after store.Cursor) (store.Cursor, bool) {
	if h := b.httpSink(projector); h != nil {
		return h.Bound(after)
	}
	return store.Cursor{}, false
}

// BoundReader is optional, beside BatchBounder: it reads the bounded batch
// itself, whole. ok is false when there is no bound after `after` (or
// nothing of it passes the filter now): the loop then reads as usual.
type BoundReader interface {
	ReadBound(ctx context.Context, projector string, after store.Cursor, f store.Filter, limit int, buf []store.Event) (events []store.Event, ok bool, err error)
}

var _ BoundReader = (*PGBackend)(nil)

// ReadBound reads an HTTP projector's recorded batch again, exactly: the
// events the filter passes after the recorded From up to and including its
// Last, however many (a batch_size smaller than the recorded leader's
// cuts nothing), read by this replica's own reader rather than the shared
// window, which may end before Last. It reads without the filter and
// applies it here, so that it knows when Last is reached even if Last no
// longer passes the filter; if Last is not yet readable (beyond this
// replica's horizon), it returns an error and the loop reads again after
// its backoff: sending a shorter batch would put acknowledged events under
// another webhook-id.
func (b *PGBackend) ReadBound(ctx context.Context, projector string, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, bool, error) {
	h := b.httpSink(projector)
	if h == nil {
		return nil, false, nil
	}
	d, ok := h.Recorded(after)
	if !ok {
		return nil, false, nil
	}
	page := max(limit, d.Events)
	all := store.Filter{PositionFloor: f.PositionFloor}
	out := buf[:0]
	var scratch []store.Event
	for cur := after; ; {
		var err error
		scratch, err = b.Reader.Read(ctx, cur, all, page, scratch[:0])
		if err != nil {
			return nil, true, err
		}
		for i := range scratch {
			e := &scratch[i]
			if d.Last.Less(e.Cursor) {
				return bounded(out)
			}
			if f.Matches(e) {
				out = append(out, *e)
			}
			if e.Cursor == d.Last {
				return bounded(out)
			}
		}
		if len(scratch) < page {
			return nil, true, fmt.Errorf("projector %s: the batch recorded before the last leader's delivery (after %s up to %s) is not yet readable up to its end on this replica; reading it again, whole, so that it keeps its webhook-id",
				projector, after, d.Last)
		}
		cur = scratch[len(scratch)-1].Cursor
	}
}

func bounded(events []store.Event) ([]store.Event, bool, error) {
	return events, len(events) > 0, nil
}
