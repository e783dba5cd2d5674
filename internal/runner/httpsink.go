package runner

import (
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
