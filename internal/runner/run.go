package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/store"
)

// Run leads projector p until ctx ends, the lease is lost or the projector
// halts. It acquires leadership first and returns ErrNotLeader at once when
// another replica leads. While an operator has the projector paused it
// holds the lease and applies nothing (waitResumed). Cancelling ctx is a
// graceful stop: a batch already read is still committed, then the lease
// is released. The returned error is nil after a graceful stop.
func Run(ctx context.Context, p Projector, b Backend) error {
	p.defaults()
	lease, err := b.TryAcquire(ctx, p.Name)
	if err != nil {
		return err
	}
	log := p.Logger.With(zap.String("projector", p.Name))
	// A hand-over is a graceful stop of this leadership alone: the batch in
	// flight commits, the lease is released with a NOTIFY, and the caller
	// is told nil, as on any graceful stop.
	var yielded <-chan struct{}
	if y, ok := lease.(Yielder); ok {
		yielded = y.Yielded()
		yctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			select {
			case <-yielded:
				stop()
			case <-yctx.Done():
			}
		}()
		ctx = yctx
	}

	// leaseCtx ends only when leadership does: commits run on it, so a
	// graceful stop never interrupts a batch half way.
	leaseCtx, cancelLease := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelLease(nil)
	go func() {
		select {
		case <-lease.Done():
			cancelLease(fmt.Errorf("%w: %v", ErrLeaseLost, lease.Err()))
		case <-leaseCtx.Done():
		}
	}()
	leading := false
	defer func() {
		// Stop reporting leadership before the lock goes, so no observer
		// ever sees this replica lead after another one can.
		if leading {
			p.Observer.StateChanged(p.Name, StateStandby)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			log.Warn("error releasing lease", zap.Error(err))
		}
	}()

	// A pause keeps the lease (no other replica may start the projector)
	// and ends this claim: once resumed, the leader claims again and reads
	// on from the checkpoint, which the refused batch never moved.
	base := log
	for {
		err := lead(ctx, leaseCtx, p, b, base, yielded, &leading)
		if cause := context.Cause(leaseCtx); cause != nil && errors.Is(err, ErrPaused) {
			// The lease ended as the pause was found: losing it is
			// what the caller must act on.
			return cause
		}
		if !errors.Is(err, ErrPaused) || context.Cause(leaseCtx) != nil {
			return err
		}
		if err := waitResumed(ctx, leaseCtx, p, b); err != nil || ctx.Err() != nil {
			return err
		}
		base.Info("projector resumed; reading on from its checkpoint")
	}
}

// lead is one claim of a leadership: it claims the checkpoint and runs the
// loop from it. It returns ErrPaused, with nothing committed past the
// checkpoint, when an operator paused the projector.
func lead(ctx, leaseCtx context.Context, p Projector, b Backend, log *zap.Logger, yielded <-chan struct{}, leading *bool) error {
	cp, err := b.Claim(leaseCtx, p.Name)
	if err != nil {
		if cause := context.Cause(leaseCtx); cause != nil {
			return cause
		}
		if errors.Is(err, store.ErrProjectorHalted) {
			// Halted by a replica with the same sink: nothing to lead.
			return fmt.Errorf("%w: %w", ErrHalted, err)
		}
		return fmt.Errorf("error claiming %s: %w", p.Name, err)
	}
	log = log.With(zap.Int64("epoch", cp.Epoch))
	*leading = true
	if cp.Status == store.StatusPaused {
		log.Info("leadership gained; the projector is paused, so it holds the lock and applies nothing until `projectord resume`",
			zap.Stringer("cursor", cp.Cursor))
		p.Observer.StateChanged(p.Name, StatePaused)
		return fmt.Errorf("%w: recorded in its checkpoint", ErrPaused)
	}
	log.Info("leadership gained", zap.Stringer("cursor", cp.Cursor), zap.Int64("position_floor", cp.PositionFloor))
	p.Observer.StateChanged(p.Name, StateLeader)

	l := &loop{p: p, b: b, log: log, epoch: cp.Epoch, persisted: cp.Cursor, scanned: cp.Cursor, lastFlush: time.Now(),
		retry: newBackoff(p.Policy.Initial, p.Policy.Max), filter: p.Filter, lease: leaseCtx,
		// Requests made while no replica led wait for this one.
		nudged: true}
	// The floor belongs to this checkpoint: it holds until a reset.
	l.filter.PositionFloor = cp.PositionFloor
	if d, ok := b.(DeadlineCommitter); ok {
		l.byDeadline = d.CommitsByDeadline(p.Name)
	}
	if strings.HasPrefix(cp.LastError, retryingPrefix) {
		// A previous leader's retry note: cleared once this one gets
		// through, rewritten if the trouble is still there.
		l.retryReason = reasonStale
	}
	if err = l.checkSink(ctx, leaseCtx); err == nil {
		err = l.run(ctx, leaseCtx)
	}
	if cause := context.Cause(leaseCtx); cause != nil && errors.Is(cause, ErrLeaseLost) {
		err = cause
	}
	switch {
	case err == nil && isClosed(yielded):
		log.Info("leadership handed over", zap.Stringer("cursor", l.persisted))
	case err == nil:
		log.Info("leadership released", zap.Stringer("cursor", l.persisted))
	case errors.Is(err, ErrHalted):
		log.Error("projector halted", zap.Stringer("cursor", l.persisted), zap.Error(err))
	case errors.Is(err, ErrPaused):
		log.Info("projector paused at a batch boundary; holding the lock, applying nothing", zap.Stringer("cursor", l.persisted))
		p.Observer.StateChanged(p.Name, StatePaused)
	default:
		log.Warn("leadership lost", zap.Stringer("cursor", l.persisted), zap.Error(err))
	}
	return err
}

// isClosed reports whether ch is closed (false for nil).
func isClosed(ch <-chan struct{}) bool {
	if ch == nil {
		return false
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// checkSink checks the sink before anything is read. A handler that
// PostgreSQL cannot parse or plan fails for every event alike, so it halts
// the projector (an operator must fix the configuration) and charges no
// event. A failure of the check itself ends this leadership with an error;
// the supervisor retries after a backoff, as after a failed claim. A
// graceful stop interrupts the check: nothing is in flight yet.
func (l *loop) checkSink(ctx, leaseCtx context.Context) error {
	c, ok := l.b.(SinkChecker)
	if !ok {
		return nil
	}
	cctx, cancel := context.WithCancel(leaseCtx)
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	err := c.CheckSink(cctx, l.p.Name)
	switch {
	case err == nil:
		return nil
	case context.Cause(leaseCtx) != nil:
		return context.Cause(leaseCtx)
	case ctx.Err() != nil:
		return nil // stopped; the run ends at once
	case errors.Is(err, store.ErrBadHandler):
		return l.halt(leaseCtx, nil, err)
	}
	return fmt.Errorf("error checking the sink of %s: %w", l.p.Name, err)
}

// halt records in the database that the projector halted, on event (nil
// for a handler that fails for every event alike, which charges no event),
// and stops it: from then on no replica with the same sink claims it until
// an operator resumes it. Only the leader may halt: a deposed one (its
// successor claimed the checkpoint meanwhile) steps down instead, so it
// keeps competing. A halt that could not be recorded is not a halt: the
// run ends with that error, and whoever leads next meets the event again.
func (l *loop) halt(ctx context.Context, event *store.Cursor, err error) error {
	serr := l.b.Halt(ctx, l.p.Name, l.epoch, event, err.Error())
	switch {
	case errors.Is(serr, store.ErrFenced):
		l.p.Observer.Error(l.p.Name, "fenced", serr)
		return fmt.Errorf("%w: %v", ErrDeposed, serr)
	case serr != nil:
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return fmt.Errorf("error recording the halt of %s (%v): %w", l.p.Name, err, serr)
	}
	return fmt.Errorf("%w: %v", ErrHalted, err)
}

// loop is the leader's catch-up/live loop.
type loop struct {
	p     Projector
	b     Backend
	log   *zap.Logger
	epoch int64
	// filter is the projector's, with the claimed checkpoint's position floor.
	filter store.Filter

	// persisted is the checkpoint in the database; scanned may be ahead of
	// it by a range that held no events for this projector's filter.
	persisted, scanned store.Cursor
	lastFlush          time.Time
	// passedOver counts events read but not applied since the last commit.
	passedOver int
	// retry paces re-reads after database failures, readRetry after
	// failed reads.
	retry, readRetry *backoff
	// ahead is the read of the next batch while this one commits.
	ahead prefetcher
	// full: the last batch read was full, so more may follow at once; a
	// short one held every event up to the head (caughtUp).
	full bool

	// lease ends with leadership; stop ends with it or at a graceful
	// stop. Retries wait on stop, commits run on lease.
	lease, stop context.Context
	// retryReason is the retry loop last_error currently reports ("" if
	// none); shown and shownAt are what was written and when.
	retryReason, shown string
	shownAt            time.Time
	// outcome is what last_error returns to when a retry is over: the
	// latest skip or dead letter ("" if none), so a retry note never
	// erases their record.
	outcome string
	// nudged says an operator nudge (Projector.Control) awaits the next
	// batch boundary (operate).
	nudged bool
	// checked is when operator requests were last read (check): they are
	// read again every PauseRecheck, in case a NOTIFY was missed.
	checked time.Time
	// flushTimer and recheckTimer are wait's, kept from one wait to the
	// next: a wait at the live tail is one per head change per projector,
	// and two new timers each time were a measurable share of the CPU of
	// a replica leading a hundred (benchmarks.md). Stopped after every
	// wait, so a reused timer never delivers a stale tick (Go 1.23
	// timers).
	flushTimer, recheckTimer *time.Timer
	// byDeadline: the backend bounds a commit by the request's deadline
	// (DeadlineCommitter), so send arms no timer of its own.
	byDeadline bool
}

// arm makes *t fire after d, creating it the first time, and returns its
// channel.
func arm(t **time.Timer, d time.Duration) <-chan time.Time {
	if *t == nil {
		*t = time.NewTimer(d)
	} else {
		(*t).Reset(d)
	}
	return (*t).C
}

// Observer.Error reasons of the retry loops (besides "fenced" and the
// supervisor's "run"); a bounded set, as metric label values.
const (
	reasonRead     = "read"     // reading events failed: retried with backoff
	reasonCommit   = "commit"   // a batch failed transiently: re-read after backoff
	reasonDatabase = "database" // a batch failed through the database's or configuration's fault: re-read after backoff
	reasonShrink   = "shrink"   // a batch failed without naming its event: split to find it
	reasonApply    = "apply"    // one event failed: retried alone, counting its attempts
	reasonPoison   = "poison"   // an event exhausted its attempts: the policy applies
	reasonStale    = "stale"    // (not reported) last_error holds a previous leader's retry note
)

const (
	// retryingPrefix starts last_error while a retry loop runs.
	retryingPrefix = "retrying: "
	// Pacing of last_error rewrites within one kind of retry (noteRetry).
	statusMinGap = time.Second
	statusEvery  = 5 * time.Second
	// statusTimeout bounds a status write, so a retry loop against a
	// database that hangs is not held up by its own reporting.
	statusTimeout = 5 * time.Second
)

// batch is one read: the events, the head seen before reading, and the
// read's error. It owns what holding a batch costs, a buffer from eventBufs
// (or, trimmed, its own) and its share of the replica's memory budget
// (taken before the read, for a whole batch, and cut to the events read
// after it), and gives both back in Release. Whoever holds a batch
// releases it once, on every path; a second Release does nothing, so a
// path that ends early cannot give its share back twice.
type batch struct {
	events   []store.Event
	head     store.Cursor
	err      error
	budget   *Budget
	held     int64 // events of the budget this batch holds
	limit    int   // the most events the read asked for: fewer means none is left up to head
	pooled   bool  // events is a buffer of eventBufs
	released bool
}

// Release returns the batch's buffer and budget share; after it, the
// events are gone (the buffer is cleared for reuse).
func (b *batch) Release() {
	if b.released {
		return
	}
	b.released = true
	if b.pooled {
		putBuf(b.events)
	}
	b.events = nil
	b.budget.release(b.held)
	b.held = 0
}

// keep makes what the batch holds of the budget equal to what it holds in
// memory: a slot of the budget for every slot of its buffer. A read took
// room for a whole batch and a batch_size buffer before it knew how many
// events it would find; at the live tail most batches are a few events,
// and holding whole buffers would make memory grow with the number of
// projectors again, which is what the budget is for. So a batch that did
// not fill its buffer is copied into one of its own size, and the room it
// did not use goes back.
//
// A read may also return more than it took room for: a recorded HTTP
// delivery is re-read whole (BoundReader), even after batch_size was
// lowered. The batch then takes the rest of its room (up to the whole
// budget: a batch larger than that is held anyway, and is the one batch
// past the bound). Without waiting while it holds room, so that two such
// batches can never wait for each other: if the rest is not free, it gives
// back what it holds and waits for all of it at once.
func (b *batch) keep(ctx context.Context) {
	if len(b.events) < cap(b.events) {
		var own []store.Event
		if len(b.events) > 0 {
			own = make([]store.Event, len(b.events))
			copy(own, b.events)
		}
		if b.pooled {
			putBuf(b.events)
		}
		b.events, b.pooled = own, false
	}
	n := int64(len(b.events))
	switch {
	case b.budget == nil:
	case b.held > n:
		b.budget.release(b.held - n)
		b.held = n
	case b.held < n:
		want := b.budget.room(int(n))
		if want <= b.held {
			return
		}
		if extra, ok := b.budget.tryAcquireExact(want - b.held); ok {
			b.held += extra
			return
		}
		b.budget.release(b.held)
		var ok bool
		if b.held, ok = b.budget.acquireExact(ctx, want); !ok {
			// Stopped while waiting: the batch is not the loop's to commit
			// uncounted. As a failed read, it moves nothing, and the next
			// leader (or this one, if it goes on) reads it again.
			b.err = fmt.Errorf("stopped while waiting for room in the memory budget: %w", ctx.Err())
		}
	}
}

// read reads the batch after `after`. The caller has taken held events of
// the budget for it: the batch holds them from now on, and keeps what it
// read. A read asks for at most what it took room for (batch_size, or the
// whole budget when that is smaller). The head is noted before reading: if
// the batch is short, every matching event up to that head was in it.
func (l *loop) read(ctx context.Context, after store.Cursor, held int64) *batch {
	b := &batch{budget: l.p.Budget, held: held, pooled: true}
	defer b.keep(ctx)
	b.head, _ = l.b.Head()
	limit := l.p.BatchSize
	if b.budget != nil {
		limit = int(b.budget.room(limit))
	}
	b.limit = limit
	buf := getBuf(limit)
	if br, ok := l.b.(BoundReader); ok {
		events, ok, err := br.ReadBound(ctx, l.p.Name, after, l.filter, limit, buf)
		if ok {
			b.events, b.err = events, err
			return b
		}
	}
	b.events, b.err = l.b.Read(ctx, after, l.filter, limit, buf)
	return b
}

// prefetcher owns the read of the following batch while the current one
// commits, so that reading overlaps committing. At most one is in flight,
// and its goroutine always ends by itself: it reads on the run's stop
// context and hands its batch over on a channel with room for it. The
// batch that take returns is the caller's to release; discard releases it
// (docs/architecture.md, rule 6: every goroutine has an owner that stops
// it, and everything held is bounded).
type prefetcher struct{ next chan *batch }

// start reads the batch after `after` in the background, if the budget has
// a token free at once: prefetching is an optimisation that must never wait.
func (pf *prefetcher) start(ctx context.Context, l *loop, after store.Cursor) {
	if pf.next != nil {
		return
	}
	held, ok := l.p.Budget.tryAcquire(l.p.BatchSize)
	if !ok {
		return
	}
	next := make(chan *batch, 1)
	pf.next = next
	go func() { next <- l.read(ctx, after, held) }()
}

// take waits for the prefetched batch and hands it over; nil when none is
// in flight.
func (pf *prefetcher) take() *batch {
	if pf.next == nil {
		return nil
	}
	b := <-pf.next
	pf.next = nil
	return b
}

// discard drops the prefetched batch, if any: it was read past a batch
// that did not commit, or nothing will use it.
func (pf *prefetcher) discard() {
	if b := pf.take(); b != nil {
		b.Release()
	}
}

// run is the leader's loop. It has one exit: whatever ends it, the
// deferred cleanup ends a prefetch still in flight, and the result goes
// through stopped.
func (l *loop) run(ctx, leaseCtx context.Context) error {
	// stop ends reads and waits on a graceful stop or on lease loss.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(leaseCtx, cancel)()
	l.stop = ctx
	l.readRetry = newBackoff(l.p.Policy.Initial, l.p.Policy.Max)
	defer func() {
		cancel() // nothing will use a prefetch: do not wait for its read to finish
		l.ahead.discard()
	}()
	return l.stopped(ctx, l.lead(ctx, leaseCtx))
}

// lead reads and commits batches until the run stops (then it flushes an
// advance over passed-over events) or fails in a way recover does not
// handle. Each batch it reads or takes from the prefetcher goes to settle,
// which releases it: the backoffs, flushes and waits below hold no batch.
func (l *loop) lead(ctx, leaseCtx context.Context) error {
	for {
		if ctx.Err() != nil || leaseCtx.Err() != nil {
			return l.flush(leaseCtx)
		}
		if err := l.operate(leaseCtx); err != nil {
			return err
		}
		b := l.ahead.take()
		if b == nil {
			// Every batch held in memory holds a token, so a replica's memory
			// is bounded by its budget, not by its number of projectors.
			held, ok := l.p.Budget.acquire(ctx, l.p.BatchSize)
			if !ok {
				return l.flush(leaseCtx)
			}
			b = l.read(ctx, l.scanned, held)
		}
		switch st, err := l.settle(ctx, leaseCtx, b); st {
		case readFailed:
			if ctx.Err() != nil || leaseCtx.Err() != nil {
				return l.flush(leaseCtx)
			}
			l.noteRetry(reasonRead, fmt.Errorf("error reading events after %s: %w", l.scanned, err))
			l.log.Warn("error reading events", zap.Stringer("cursor", l.scanned), zap.Error(err))
			if !sleep(ctx, l.readRetry.delay()) {
				return l.flush(leaseCtx)
			}
		case passedOver:
			if err := l.passOver(ctx, leaseCtx, false); err != nil && !l.recover(ctx, err) {
				return err
			}
		case passedOverFull:
			if err := l.passOver(ctx, leaseCtx, true); err != nil && !l.recover(ctx, err) {
				return err
			}
		case committed:
			if err != nil {
				// The prefetch read past a batch that did not commit.
				l.ahead.discard()
				if !l.recover(ctx, err) {
					return err
				}
				continue
			}
			l.retry.reset()
			l.clearRetry()
			if !l.full {
				if err := l.caughtUp(leaseCtx); err != nil {
					return err
				}
			}
		}
	}
}

// settled is what became of a batch in settle.
type settled int

const (
	readFailed     settled = iota // the read failed (the error is the read's)
	passedOver                    // nothing in it for the sink: scanned moved past it
	passedOverFull                // the same, for a full batch: more may follow at once
	committed                     // committed, or not if the error says so
)

// settle takes batch b as far as it goes while it is held, and releases
// it before returning. A batch with events for the sink is committed, with
// the following batch prefetched meanwhile if this one was full.
func (l *loop) settle(ctx, leaseCtx context.Context, b *batch) (settled, error) {
	defer b.Release()
	if b.err != nil {
		return readFailed, b.err
	}
	l.readRetry.reset()
	if l.retryReason == reasonRead || l.retryReason == reasonStale {
		l.clearRetry()
	}
	events, bounded := l.bound(b.events)
	to := l.scanned
	if len(events) > 0 {
		to = events[len(events)-1].Cursor
	}
	// Full against what the read asked for, not batch_size: a read the
	// budget made smaller that came back full is not the end of what is
	// there, and taking it for short would move the checkpoint to the head
	// over the events it did not read.
	full := len(events) >= b.limit || bounded
	l.full = full
	if !full && to.Less(b.head) {
		to = b.head
	}
	// Events the sink has no handler for are passed over like
	// filtered-out ones: a batch of only those commits nothing.
	read := len(events)
	if events = l.handled(events); len(events) == 0 {
		if l.scanned.Less(to) {
			l.scanned = to
		}
		l.passedOver += read
		if full {
			return passedOverFull, nil
		}
		return passedOver, nil
	}
	if full {
		// Overlap reading the next batch with committing this one.
		l.ahead.start(ctx, l, to)
	}
	return committed, l.commit(leaseCtx, events, to)
}

// bound cuts events at the backend's bound for a batch read after scanned
// (BatchBounder), reporting whether a bound applied.
func (l *loop) bound(events []store.Event) ([]store.Event, bool) {
	bb, ok := l.b.(BatchBounder)
	if !ok {
		return events, false
	}
	last, ok := bb.Bound(l.p.Name, l.scanned)
	if !ok {
		return events, false
	}
	n := 0
	for n < len(events) && !last.Less(events[n].Cursor) {
		n++
	}
	if n == 0 {
		// Nothing of the bounded batch was read again (its events no
		// longer pass the filter): a bound that cuts everything would
		// stop the loop where it is.
		return events, false
	}
	// Bounded even when nothing was cut: the batch was read up to the
	// bound only (BoundReader), so the head says nothing of what follows.
	return events[:n], true
}

// passOver follows a batch that held nothing for the sink: it persists the
// advance when FlushInterval has passed and, unless more may follow at once
// (full), when caught up after at least a batch's worth, then waits for the
// head to move.
func (l *loop) passOver(ctx, leaseCtx context.Context, full bool) error {
	if err := l.maybeFlush(leaseCtx); err != nil || full {
		return err
	}
	// Caught up after passing over at least a batch's worth: persist now
	// rather than at the next flush tick, so a restart does not re-read
	// them. Smaller advances wait for the tick, so a busy source does not
	// cost a commit per poll.
	if l.passedOver >= l.p.BatchSize {
		if err := l.flush(leaseCtx); err != nil {
			return err
		}
	}
	// At the head, but a promotion compares checkpoints as persisted: asked
	// before the pass-over is, it can find the live version ahead, and no
	// batch may follow to ask again. So it is asked once the checkpoint is
	// where this leader is (here, or when wait persists it).
	if l.persisted == l.scanned {
		if err := l.caughtUp(leaseCtx); err != nil {
			return err
		}
	}
	return l.wait(ctx, leaseCtx)
}

// stopped turns an error met while stopping into the run's result: a
// database failure during a graceful stop is not the run's failure (the
// next leader re-reads from the checkpoint).
func (l *loop) stopped(ctx context.Context, err error) error {
	var re *retryError
	if errors.As(err, &re) && ctx.Err() != nil {
		return nil
	}
	return err
}

// handled compacts events, in place, to those the sink acts on. A bad row
// of a type the sink does not handle is not this projector's event, and is
// passed over like any other. A row whose type is NULL is kept, and so
// poisons: an event_types filter never matches NULL, so only a projector
// that takes every type reads it, and it cannot tell which of its handlers
// the row was meant for; passing over it would lose an event silently.
func (l *loop) handled(events []store.Event) []store.Event {
	f, ok := l.b.(SinkFilter)
	if !ok {
		return events
	}
	out := events[:0]
	for i := range events {
		if events[i].TypeNull() || f.Handles(l.p.Name, events[i].Type) {
			out = append(out, events[i])
		}
	}
	return out
}

// wait blocks until the head moves past what this projector has scanned,
// persisting a pending advance over filtered-out events meanwhile.
func (l *loop) wait(ctx, leaseCtx context.Context) error {
	for {
		head, ch := l.b.Head()
		if l.scanned.Less(head) {
			return nil
		}
		var flush <-chan time.Time
		if l.persisted != l.scanned {
			flush = arm(&l.flushTimer, time.Until(l.lastFlush.Add(l.p.FlushInterval)))
		}
		// An idle leader still learns of a pause or a retry request whose
		// NOTIFY it missed: one small read every PauseRecheck, here rather
		// than through the batch loop, so an idle tick costs no event read.
		recheck := arm(&l.recheckTimer, time.Until(l.checked.Add(l.p.PauseRecheck)))
		due := false
		select {
		case <-ch:
		case <-flush:
		case <-ctx.Done():
		case <-l.p.Control:
			l.nudged = true
		case <-recheck:
			due = true
		}
		l.recheckTimer.Stop()
		if flush != nil {
			l.flushTimer.Stop()
		}
		if l.nudged {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if due {
			if err := l.check(leaseCtx, false); err != nil {
				return err
			}
		}
		pending := l.persisted != l.scanned
		if err := l.maybeFlush(leaseCtx); err != nil {
			return err
		}
		if pending && l.persisted == l.scanned {
			if err := l.caughtUp(leaseCtx); err != nil {
				return err
			}
		}
	}
}

// maybeFlush persists an advance over filtered-out events once FlushInterval has passed.
func (l *loop) maybeFlush(ctx context.Context) error {
	if l.persisted == l.scanned || time.Since(l.lastFlush) < l.p.FlushInterval {
		return nil
	}
	return l.flush(ctx)
}

// flush persists scanned if it is ahead of the checkpoint.
func (l *loop) flush(ctx context.Context) error {
	if l.persisted == l.scanned || ctx.Err() != nil {
		return nil
	}
	if err := l.commit(ctx, nil, l.scanned); err != nil {
		return err
	}
	l.clearRetry()
	return nil
}

// commit applies events and moves the checkpoint to `to`. What a failure
// leads to depends on whose fault it is (store.Classify): the database's
// is retried from the checkpoint after a backoff; an event's goes to the
// error policy through poison; a failure that names no event (a deferred
// constraint at commit, a batch out of time) splits the batch to find it.
func (l *loop) commit(ctx context.Context, events []store.Event, to store.Cursor) error {
	end, err := l.send(ctx, to, events, nil)
	if end != nil || err == nil {
		return end
	}
	if errors.Is(err, store.ErrBadHandler) {
		// A handler that fails for every event alike (it tried to end the
		// batch's transaction): a configuration error, never an event's.
		l.p.Observer.Error(l.p.Name, "commit", err)
		return l.halt(ctx, nil, err)
	}
	class := store.Classify(err)
	index, cause := -1, err
	var applyErr *store.ApplyError
	if errors.As(err, &applyErr) {
		index, cause = applyErr.Index, applyErr.Err
	}
	switch {
	case class == store.ClassNoAnswer && len(events) > 1:
		// The batch as a whole ran out of time with no answer: try it in
		// smaller pieces (charging nothing). A single event that meets it
		// is retried below: it is the server's or the network's stall.
		return l.split(ctx, events, to, class, err)
	case len(events) == 0 || !class.CountsAgainstEvent():
		return l.retryLater(class, fmt.Errorf("error committing batch up to %s: %w", to, err))
	case index >= 0 && index < len(events) && class != store.ClassTimeout:
		return l.poison(ctx, events, to, index, cause)
	case len(events) == 1:
		return l.poison(ctx, events, to, 0, cause)
	default:
		// A time-out names the statement running when the batch's time
		// was up, not necessarily the one that used it.
		return l.split(ctx, events, to, class, err)
	}
}

// send is the one way a commit reaches the backend: every batch, split
// half, single-event retry and dead letter moves the checkpoint from
// persisted to `to` through it, under CommitTimeout (so no commit waits on
// a hung database for longer: docs/architecture.md, rule 6). A commit
// that went through advances the loop and returns (nil, nil). A failure
// that ends this leadership comes back as end, for the caller to return as
// it is: the lease's cause when leadership ended meanwhile, ErrDeposed
// (reported as fenced) when another leader claimed the projector. Any
// other failure comes back as err, for the caller to place.
func (l *loop) send(ctx context.Context, to store.Cursor, events []store.Event, dl *store.DeadLetter) (end, err error) {
	start := time.Now()
	req := store.CommitRequest{Projector: l.p.Name, Epoch: l.epoch, From: l.persisted, To: to, Events: events, DeadLetter: dl}
	if l.byDeadline {
		req.Deadline = start.Add(l.p.CommitTimeout)
		err = l.b.Commit(ctx, req)
	} else {
		cctx, cancel := context.WithTimeout(ctx, l.p.CommitTimeout)
		err = l.b.Commit(cctx, req)
		cancel()
	}
	switch {
	case err == nil:
		l.advanced(to, len(events), time.Since(start))
		return nil, nil
	case ctx.Err() != nil:
		return context.Cause(ctx), nil
	case errors.Is(err, store.ErrFenced):
		l.p.Observer.Error(l.p.Name, "fenced", err)
		return fmt.Errorf("%w: %v", ErrDeposed, err), nil
	case errors.Is(err, store.ErrPaused):
		// Refused whole by the fence: not a failure, nothing to retry.
		return fmt.Errorf("%w: %v", ErrPaused, err), nil
	}
	return nil, err
}

// retryError is a failure of the database, not of an event: the loop drops
// the batch (and its share of the memory budget, so one sick target does
// not starve the replica's other projectors), backs off, and re-reads from
// the checkpoint. It never counts against an event.
type retryError struct{ err error }

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// retryLater reports a failure that is not an event's and returns the
// retryError that sends the loop back to the checkpoint.
func (l *loop) retryLater(class store.ErrorClass, err error) error {
	reason := reasonDatabase
	if class == store.ClassTransient || class == store.ClassTimeout || class == store.ClassNoAnswer {
		reason = reasonCommit
	}
	l.noteRetry(reason, err)
	l.log.Warn("batch failed, not through an event's fault; will re-read it", zap.Stringer("cursor", l.persisted),
		zap.Stringer("class", class), zap.Error(err))
	return &retryError{err}
}

// recover handles a retryError: back to the checkpoint, after a backoff.
// It reports false when err is something else or ctx ended meanwhile.
func (l *loop) recover(ctx context.Context, err error) bool {
	var re *retryError
	if !errors.As(err, &re) {
		return false
	}
	l.scanned, l.passedOver = l.persisted, 0
	return sleep(ctx, l.retry.delay())
}

func (l *loop) advanced(to store.Cursor, n int, took time.Duration) {
	l.persisted, l.lastFlush, l.passedOver = to, time.Now(), 0
	if l.scanned.Less(to) {
		l.scanned = to
	}
	l.p.Observer.BatchCommitted(l.p.Name, n, to, took)
	// Checked first: the fields of a call that logs nothing would still be
	// allocated, for every batch.
	if ce := l.log.Check(zap.DebugLevel, "batch committed"); n > 0 && ce != nil {
		ce.Write(zap.Int("events", n), zap.Stringer("cursor", to), zap.Duration("took", took))
	}
}

// split commits a batch that failed without naming its event (a deferred
// constraint fails at commit; a batch that runs out of time is cut short
// wherever it was) as two halves, each split again if it fails the same
// way, until the failing event is alone: a poison event. The batch in hand
// is split, so the cursor moves only through commits; the next batch is
// read at full size again.
func (l *loop) split(ctx context.Context, events []store.Event, to store.Cursor, class store.ErrorClass, err error) error {
	l.noteRetry(reasonShrink, fmt.Errorf("batch of %d events after %s failed (%s) without naming an event; retrying it in halves: %w",
		len(events), l.persisted, class, err))
	l.log.Warn("batch failed without naming an event; splitting it", zap.Stringer("cursor", l.persisted),
		zap.Int("events", len(events)), zap.Stringer("class", class), zap.Error(err))
	mid := len(events) / 2
	halves := []struct {
		events []store.Event
		to     store.Cursor
	}{{events[:mid], events[mid-1].Cursor}, {events[mid:], to}}
	for _, h := range halves {
		if l.stop.Err() != nil {
			// A graceful stop does not wait for the search; the next
			// leader re-reads from the checkpoint.
			return &retryError{err}
		}
		if err := l.commit(ctx, h.events, h.to); err != nil {
			return err
		}
	}
	return nil
}

// poison commits the events before the failing one (index), retries the
// failing event alone with backoff, then applies the policy, and finally
// commits the rest of the batch. The retries wait on the stop context: a
// graceful stop ends them at once and applies no policy (the next leader
// re-reads the event from the checkpoint).
func (l *loop) poison(ctx context.Context, events []store.Event, to store.Cursor, index int, cause error) error {
	if index > 0 {
		if err := l.commit(ctx, events[:index], events[index-1].Cursor); err != nil {
			return err
		}
	}
	bad := events[index]
	one := events[index : index+1]
	lastErr := cause
	what := fmt.Sprintf("event %s (%s, stream %s)", bad.Cursor, orNULL(bad.Type, bad.TypeNull()), orNULL(bad.StreamID, bad.Bad.Null("stream_id")))
	bo := newBackoff(l.p.Policy.Initial, l.p.Policy.Max)
	for attempt := 2; attempt <= l.p.Policy.MaxAttempts; attempt++ {
		l.noteRetry(reasonApply, fmt.Errorf("%s failed %d of at most %d times: %w", what, attempt-1, l.p.Policy.MaxAttempts, lastErr))
		l.log.Warn("event failed, retrying", zap.Stringer("event", bad.Cursor), zap.String("event_type", bad.Type),
			zap.Int("attempt", attempt-1), zap.Error(lastErr))
		if !sleep(l.stop, bo.delay()) {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return &retryError{lastErr}
		}
		end, err := l.send(ctx, bad.Cursor, one, nil)
		if end != nil {
			return end
		}
		if err == nil {
			return l.rest(ctx, events[index+1:], to)
		}
		class := store.Classify(err)
		if !class.CountsAgainstEvent() {
			// The database failed, not the event: start over from the
			// checkpoint later; this event's attempts start again too.
			return l.retryLater(class, fmt.Errorf("error retrying %s: %w", what, err))
		}
		lastErr = err
		var applyErr *store.ApplyError
		if errors.As(err, &applyErr) {
			lastErr = applyErr.Err
		}
	}
	msg := fmt.Sprintf("%s failed %d times: %v", what, l.p.Policy.MaxAttempts, lastErr)
	// A poison event is reported once its outcome is recorded, by this
	// replica: a leader deposed before that leaves it to its successor.
	poisoned := func(o Outcome) {
		l.p.Observer.Error(l.p.Name, reasonPoison, lastErr)
		l.p.Observer.Poisoned(l.p.Name, o)
	}
	// The policy's outcome replaces the retry note in last_error and stays.
	l.retryReason, l.shown = "", ""
	switch l.p.Policy.Then {
	case ThenSkip:
		l.log.Error("skipping poison event", zap.Stringer("event", bad.Cursor), zap.Error(lastErr))
		if err := l.commit(ctx, nil, bad.Cursor); err != nil {
			return err
		}
		poisoned(OutcomeSkipped)
		l.outcome = "skipped " + msg
		l.setStatus(ctx, store.StatusRunning, l.outcome)
	case ThenDeadLetter:
		l.log.Error("dead-lettering poison event", zap.Stringer("event", bad.Cursor), zap.Error(lastErr))
		end, err := l.send(ctx, bad.Cursor, nil, &store.DeadLetter{Event: bad, Error: lastErr.Error(), Attempts: l.p.Policy.MaxAttempts})
		if end != nil {
			return end
		}
		if err != nil {
			return l.retryLater(store.Classify(err), fmt.Errorf("error recording dead letter of %s: %w", what, err))
		}
		poisoned(OutcomeDeadLettered)
		l.outcome = "dead-lettered " + msg
		l.setStatus(ctx, store.StatusRunning, l.outcome)
	default:
		err := l.halt(ctx, &bad.Cursor, errors.New(msg))
		if errors.Is(err, ErrHalted) {
			poisoned(OutcomeHalted)
		}
		return err
	}
	return l.rest(ctx, events[index+1:], to)
}

// orNULL is s, or NULL when the source value was NULL.
func orNULL(s string, null bool) string {
	if null {
		return "NULL"
	}
	return s
}

func (l *loop) rest(ctx context.Context, events []store.Event, to store.Cursor) error {
	if len(events) == 0 && l.persisted == to {
		return nil
	}
	return l.commit(ctx, events, to)
}

func (l *loop) setStatus(ctx context.Context, status, msg string) {
	if err := l.b.SetStatus(ctx, l.p.Name, l.epoch, status, msg); err != nil {
		l.log.Warn("error recording projector status", zap.Error(err))
	}
}

// noteRetry reports one failure of a retry loop: to the observer every
// time, and in last_error ("retrying: ...") at once when a new kind of
// retry begins; within one kind, when the error changes (at most once per
// statusMinGap) and every statusEvery, so a hot loop does not write the
// checkpoint row on every retry.
func (l *loop) noteRetry(reason string, err error) {
	l.p.Observer.Error(l.p.Name, reason, err)
	msg := retryingPrefix + err.Error()
	since := l.p.Clock().Sub(l.shownAt)
	if reason == l.retryReason && l.shown != "" && (since < statusMinGap || (msg == l.shown && since < statusEvery)) {
		return
	}
	l.retryReason, l.shown, l.shownAt = reason, msg, l.p.Clock()
	l.writeStatus(msg)
}

// clearRetry empties last_error once the retried work gets through, back
// to the latest policy outcome if there is one.
func (l *loop) clearRetry() {
	if l.retryReason == "" {
		return
	}
	l.retryReason, l.shown = "", ""
	l.writeStatus(l.outcome)
}

func (l *loop) writeStatus(msg string) {
	ctx, cancel := context.WithTimeout(l.lease, min(statusTimeout, l.p.CommitTimeout))
	defer cancel()
	l.setStatus(ctx, store.StatusRunning, msg)
}
