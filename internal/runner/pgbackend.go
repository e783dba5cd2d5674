package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/httpsink"
	"github.com/projectord/projectord/internal/store"
)

// PGBackend implements Backend on PostgreSQL: the source reader and the
// replica's watcher, one coordination session, and per projector the target
// database (its sink and checkpoint) to commit into.
type PGBackend struct {
	PGBackendConfig

	mu      sync.RWMutex
	targets map[string]*store.Target
	sinks   map[string]*store.SQLSink
	ids     map[string]int32
	// versions holds the version each projector runs (AddVersion).
	versions map[string]*pgVersion
	// live caches the live versions of each target, for standbys' turns.
	live liveVersions
	// http holds the HTTP sinks, by projector (httpsink.go).
	http map[string]*httpsink.Sink
}

// PGBackendConfig is what a PGBackend is made of.
type PGBackendConfig struct {
	// Node is this replica's node id, recorded by its claims.
	Node string
	// Reader reads the source; the lock-id registry lives in its database.
	Reader  *store.Reader
	Watcher *Watcher
	// Tail, if set, answers the projectors' reads: shared among those at
	// the live tail, passed on to Reader for the others.
	Tail *Tail
	// ObserveRead, if set, is told what each read did (with no Tail, each
	// is a read of the projector's own). It must not block.
	ObserveRead func(TailRead)
	Session     *coord.Session
	// Balance, if set, decides which projectors this replica tries for and
	// hands over (it is the session's Observer).
	Balance *Balance
	// SourceID is the source cluster's system identifier, 0 if unknown.
	SourceID int64
	// Logger, if set, records checkpoint conversions between orderings.
	Logger *zap.Logger
}

// NewPGBackend returns a backend with no projector yet (AddProjector).
func NewPGBackend(c PGBackendConfig) *PGBackend {
	return &PGBackend{PGBackendConfig: c, targets: map[string]*store.Target{}, sinks: map[string]*store.SQLSink{}, ids: map[string]int32{},
		http: map[string]*httpsink.Sink{}}
}

var _ Backend = (*PGBackend)(nil)

// AddProjector registers where projector name commits, and with what sink.
func (b *PGBackend) AddProjector(name string, t *store.Target, s *store.SQLSink) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.targets[name], b.sinks[name] = t, s
}

// Target returns the projector's target database.
func (b *PGBackend) Target(name string) *store.Target {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.targets[name]
}

func (b *PGBackend) target(name string) (*store.Target, *store.SQLSink, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	t, ok := b.targets[name]
	if !ok {
		return nil, nil, fmt.Errorf("projector %s is not registered with the backend", name)
	}
	return t, b.sinks[name], nil
}

// Read implements EventReader.
func (b *PGBackend) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	if b.Tail != nil {
		return b.Tail.Read(ctx, after, f, limit, buf)
	}
	if b.ObserveRead != nil {
		b.ObserveRead(TailOwn)
	}
	return b.Reader.Read(ctx, after, f, limit, buf)
}

// Head implements EventReader from the watcher's last poll.
func (b *PGBackend) Head() (store.Cursor, <-chan struct{}) { return b.Watcher.Head() }

// Claim implements CheckpointStore. It re-reads the source cluster's
// identity first: a database swapped behind the same URL (a restore into a
// new cluster) makes every cursor, and the watcher's head, meaningless.
// A checkpoint written under another source.ordering is converted to the
// reader's, or refused with store.ErrOrderingChanged (see store.Target.Convert).
// Both refusals are fatal (IsFatal): the supervisor ends with them, and the
// daemon stops.
func (b *PGBackend) Claim(ctx context.Context, projector string) (store.Checkpoint, error) {
	t, _, err := b.target(projector)
	if err != nil {
		return store.Checkpoint{}, err
	}
	if b.SourceID != 0 {
		id, err := b.Reader.SystemIdentifier(ctx)
		if err != nil {
			return store.Checkpoint{}, err
		}
		if id != 0 && id != b.SourceID {
			err := fmt.Errorf("%w: the source database is now cluster %d, it was %d when projectord started; restart projectord (and reset projectors whose checkpoints predate the change)",
				store.ErrClusterChanged, id, b.SourceID)
			return store.Checkpoint{}, err
		}
	}
	if err := b.registerVersion(ctx, projector); err != nil {
		return store.Checkpoint{}, err
	}
	cp, err := t.ClaimSink(ctx, projector, b.Node, b.SourceID, b.Reader.Ordering(), b.fingerprint(projector))
	if err != nil {
		return cp, err
	}
	from := cp
	cp, err = t.Convert(ctx, cp, b.Reader)
	if errors.Is(err, store.ErrOrderingChanged) {
		// Recorded where `projectord status` shows it; a leader with a
		// matching configuration clears it when it claims.
		if serr := t.SetStatus(ctx, projector, from.Epoch, store.StatusHalted, err.Error()); serr != nil && b.Logger != nil {
			b.Logger.Warn("error recording projector status", zap.String("projector", projector), zap.Error(serr))
		}
		return store.Checkpoint{}, err
	}
	if err != nil {
		return store.Checkpoint{}, err
	}
	// Before the sink check: the handlers may write to a table setup creates.
	if err := b.setupVersion(ctx, projector, cp.Epoch); err != nil {
		return store.Checkpoint{}, err
	}
	if h := b.httpSink(projector); h != nil {
		if err := h.Claimed(ctx, projector, cp, t); err != nil {
			return store.Checkpoint{}, err
		}
	}
	if cp.Ordering != from.Ordering && b.Logger != nil {
		b.Logger.Info("checkpoint converted to the configured source.ordering",
			zap.String("projector", projector), zap.String("from", string(from.Ordering)), zap.Stringer("from_cursor", from.Cursor),
			zap.String("to", string(cp.Ordering)), zap.Stringer("cursor", cp.Cursor), zap.Int64("position_floor", cp.PositionFloor))
	}
	return cp, nil
}

// Commit implements CheckpointStore.
func (b *PGBackend) Commit(ctx context.Context, req store.CommitRequest) error {
	t, s, err := b.target(req.Projector)
	if err != nil {
		return err
	}
	if h := b.httpSink(req.Projector); h != nil {
		return b.supersededCommit(ctx, req.Projector, h.Commit(ctx, req, t))
	}
	err = t.Commit(ctx, req, s)
	if err == nil || req.Expired() {
		// Cut short by its deadline: not asked about, as for a context's
		// (supersededCommit).
		return err
	}
	if !req.Deadline.IsZero() {
		// The question is part of the commit, within its deadline (a
		// timer only on this failure path).
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.Deadline)
		defer cancel()
	}
	return b.supersededCommit(ctx, req.Projector, err)
}

// CommitsByDeadline implements DeadlineCommitter: a target's Commit
// honours the request's deadline; an HTTP sink's delivery is bounded by
// its context.
func (b *PGBackend) CommitsByDeadline(projector string) bool {
	return b.httpSink(projector) == nil
}

// SetStatus implements CheckpointStore.
func (b *PGBackend) SetStatus(ctx context.Context, projector string, epoch int64, status, lastErr string) error {
	t, _, err := b.target(projector)
	if err != nil {
		return err
	}
	return t.SetStatus(ctx, projector, epoch, status, lastErr)
}

// Halt implements CheckpointStore: the halt is recorded with the
// fingerprint of the projector's sink, so replicas running the same
// handlers do not claim it again.
func (b *PGBackend) Halt(ctx context.Context, projector string, epoch int64, event *store.Cursor, msg string) error {
	t, _, err := b.target(projector)
	if err != nil {
		return err
	}
	return t.Halt(ctx, projector, epoch, event, b.fingerprint(projector), msg)
}

func (b *PGBackend) fingerprint(projector string) string {
	if h := b.httpSink(projector); h != nil {
		return h.Fingerprint()
	}
	_, s, err := b.target(projector)
	if err != nil || s == nil {
		return ""
	}
	return s.Fingerprint()
}

// CheckSink implements SinkChecker: it prepares and plans every handler of
// the projector's sink on its target database.
func (b *PGBackend) CheckSink(ctx context.Context, projector string) error {
	t, s, err := b.target(projector)
	if err != nil || s == nil {
		return err
	}
	return t.CheckSink(ctx, s)
}

// Handles implements SinkFilter.
func (b *PGBackend) Handles(projector, eventType string) bool {
	_, s, err := b.target(projector)
	if err == nil && s == nil && b.httpSink(projector) != nil {
		// A receiver takes every event it is sent: the filter is the
		// projector's event_types, applied by the read.
		return true
	}
	return err == nil && s != nil && s.Handles(eventType)
}

// TryAcquire implements Coordinator.
func (b *PGBackend) TryAcquire(ctx context.Context, projector string) (Lease, error) {
	if err := b.checkLive(ctx, projector, true); err != nil {
		return nil, err
	}
	id, err := b.lockID(ctx, projector)
	if err != nil {
		return nil, err
	}
	acquire := func(ctx context.Context) (Lease, error) {
		l, err := b.Session.TryAcquire(ctx, projector, id)
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	if b.Balance == nil {
		return acquire(ctx)
	}
	b.Balance.SetLockID(projector, id)
	return b.Balance.TryAcquire(ctx, projector, acquire)
}

// Turn implements Coordinator.
func (b *PGBackend) Turn() <-chan struct{} { return b.Session.Turn() }

func (b *PGBackend) lockID(ctx context.Context, projector string) (int32, error) {
	b.mu.RLock()
	id, ok := b.ids[projector]
	b.mu.RUnlock()
	if ok {
		return id, nil
	}
	id, err := b.Reader.ProjectorID(ctx, projector)
	if err != nil {
		return 0, err
	}
	b.mu.Lock()
	b.ids[projector] = id
	b.mu.Unlock()
	return id, nil
}

// Paused implements Operator.
func (b *PGBackend) Paused(ctx context.Context, projector string) (bool, error) {
	t, _, err := b.target(projector)
	if err != nil {
		return false, err
	}
	return t.Paused(ctx, projector)
}

// Requests implements Requester.
func (b *PGBackend) Requests(ctx context.Context, projector string, maxAge time.Duration) (paused, retries bool, err error) {
	t, _, err := b.target(projector)
	if err != nil {
		return false, false, err
	}
	return t.RequestsOf(ctx, projector, maxAge)
}

// RetryDeadLetters implements Operator.
func (b *PGBackend) RetryDeadLetters(ctx context.Context, projector string, epoch int64) ([]store.RetryOutcome, error) {
	t, s, err := b.target(projector)
	if err != nil {
		return nil, err
	}
	if s == nil && b.httpSink(projector) != nil {
		// `dead-letters retry` refuses an HTTP projector: nothing to do
		// (and nothing to warn of at every leadership start).
		return nil, nil
	}
	if s == nil {
		return nil, fmt.Errorf("projector %s has no SQL sink to retry its dead letters through", projector)
	}
	return t.RetryDeadLetters(ctx, projector, epoch, s)
}
