package runner

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/store"
)

// HeadReader reads the newest readable cursor of the source.
type HeadReader interface {
	Head(ctx context.Context) (store.Cursor, bool, error)
}

// Watcher is the replica's single source watcher: one cheap head query per
// poll interval, however many projectors there are, and an early poll when
// a NOTIFY hint arrives. Projectors wait on its changed channel instead of
// polling the database themselves (docs/architecture.md, rule 5).
type Watcher struct {
	r        HeadReader
	interval time.Duration
	log      *zap.Logger

	kick chan struct{}

	// advance, if set, is called with a new head before the projectors
	// are told of it (Tail.Advance).
	advance func(context.Context, store.Cursor)
	// poll, if set, may find the head instead of a head query (Tail.Poll).
	poll func(context.Context) (store.Cursor, bool, bool, error)

	mu      sync.Mutex
	head    store.Cursor
	changed chan struct{}
	polled  time.Time
	looped  time.Time
	err     error
}

// NewWatcher returns a watcher polling r every interval.
func NewWatcher(r HeadReader, interval time.Duration, log *zap.Logger) *Watcher {
	return &Watcher{r: r, interval: interval, log: log, kick: make(chan struct{}, 1), changed: make(chan struct{})}
}

// BeforePublish makes the watcher call f with every new head before it
// wakes the projectors waiting for one (Tail.Advance: the shared window is
// extended first). f must return once its context ends. Call it before Run.
func (w *Watcher) BeforePublish(f func(context.Context, store.Cursor)) { w.advance = f }

// PollWith makes the watcher ask f for the head first (bounded by a poll
// interval), and query the head itself only when f does not handle the
// poll (Tail.Poll). Call it before Run.
func (w *Watcher) PollWith(f func(context.Context) (head store.Cursor, ok, handled bool, err error)) {
	w.poll = f
}

// Head implements EventReader.Head.
func (w *Watcher) Head() (store.Cursor, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.head, w.changed
}

// LastPoll returns when the head was last read successfully, and the last error.
func (w *Watcher) LastPoll() (time.Time, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.polled, w.err
}

// LastLoop returns when the poll loop last ran, successful or not: a
// liveness signal that does not depend on the database.
func (w *Watcher) LastLoop() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.looped
}

// Kick asks for a poll now (a NOTIFY arrived). It never blocks.
func (w *Watcher) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// firstChase is the wait before the first poll that chases a NOTIFY
// whose events the poll it caused could not read yet (Run).
const firstChase = 10 * time.Millisecond

// Run polls until ctx ends.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	failing := false
	bo := newBackoff(w.interval, 2*time.Second)
	// chase is the wait before the next early poll after a NOTIFY, 0 when
	// none is due. A NOTIFY says that events committed, but the poll it
	// causes may run while an older transaction (the coordination
	// session's heartbeat, an autovacuum ANALYZE, a writer's transaction
	// that began earlier) still holds the horizon below them: they become
	// readable when it ends, and no NOTIFY says so. The watcher polls
	// again after 10 ms, 20 ms, 40 ms, … while the wait is below the poll
	// interval, so that a long interval (the NOTIFY's reason to exist)
	// does not leave them for a whole interval; at most
	// log2(interval / 10 ms) more polls per NOTIFY. A head that moves does
	// not end the chase: the NOTIFY carries no payload, and two holders
	// can each hold back part of what the NOTIFYs announced (two NOTIFYs
	// during one poll are one kick), so the part behind the second would
	// again wait for the interval.
	var chase time.Duration
	var chaseTimer *time.Timer
	defer func() {
		if chaseTimer != nil {
			chaseTimer.Stop()
		}
	}()
	for {
		var head store.Cursor
		var ok, handled bool
		var err error
		if w.poll != nil {
			// Bounded like Advance below, for the same reasons.
			pctx, cancel := context.WithTimeout(ctx, w.interval)
			head, ok, handled, err = w.poll(pctx)
			cancel()
		}
		if !handled {
			head, ok, err = w.r.Head(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		if !handled && err == nil && ok && w.advance != nil {
			if cur, _ := w.Head(); cur.Less(head) {
				// Waited for a poll interval at most: a read that takes
				// longer (up to the query timeout) would hold the head
				// from every projector, those reading on their own too,
				// and make one loop two statements long, past what the
				// liveness check allows a loop (query timeout + 10s).
				// Published sooner, the woken projectors wait for that
				// read themselves, as they did before Advance.
				actx, cancel := context.WithTimeout(ctx, w.interval)
				w.advance(actx, head)
				cancel()
			}
		}
		w.mu.Lock()
		w.err = err
		w.looped = time.Now()
		if err == nil {
			w.polled = time.Now()
			if ok && w.head.Less(head) {
				w.head = head
				close(w.changed)
				w.changed = make(chan struct{})
			}
		}
		w.mu.Unlock()
		if err != nil && !failing {
			w.log.Warn("error polling source head", zap.Error(err))
		}
		failing = err != nil
		if failing {
			// The database is down: back off (capped) instead of trying
			// every poll interval; a NOTIFY cannot arrive meanwhile anyway.
			chase = 0
			if !sleep(ctx, bo.delay()) {
				return
			}
			continue
		}
		bo.reset()
		var chaseC <-chan time.Time
		if chase > 0 {
			// Reset leaves no stale tick behind (Go 1.23 timers).
			if chaseTimer == nil {
				chaseTimer = time.NewTimer(chase)
			} else {
				chaseTimer.Reset(chase)
			}
			chaseC = chaseTimer.C
		}
		select {
		case <-t.C:
		case <-w.kick:
			chase = min(firstChase, w.interval)
		case <-chaseC:
			if chase *= 2; chase >= w.interval {
				chase = 0 // the ticker polls as soon from here
			}
		case <-ctx.Done():
			return
		}
	}
}
