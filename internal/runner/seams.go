package runner

import (
	"context"
	"errors"
	"time"

	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/store"
)

var (
	// ErrNotLeader means another replica leads the projector.
	ErrNotLeader = coord.ErrNotLeader
	// ErrLeaseLost means leadership ended while the projector ran.
	ErrLeaseLost = errors.New("leadership lost")
	// ErrDeposed means a commit was fenced: another leader claimed the projector.
	ErrDeposed = errors.New("deposed: another leader claimed the projector")
	// ErrHalted means the projector stopped until an operator acts: a
	// poison event exhausted its retries under policy halt, or a handler
	// fails for every event (store.ErrBadHandler).
	ErrHalted = errors.New("projector halted")
	// ErrPaused means an operator paused the projector (store.ErrPaused):
	// the batch in hand was refused whole. The leader keeps its lease and
	// waits for the resume; nothing is lost and no retry is counted.
	ErrPaused = errors.New("projector paused")
)

// IsFatal reports whether err is one no replica can get past without an
// operator: the source is another PostgreSQL cluster than at start-up
// (store.ErrClusterChanged), or a checkpoint's ordering cannot be converted
// to the configured one (store.ErrOrderingChanged). A supervisor ends with
// such an error; the daemon stops with it as its cause.
func IsFatal(err error) bool {
	return errors.Is(err, store.ErrClusterChanged) || errors.Is(err, store.ErrOrderingChanged)
}

// EventReader reads the source.
type EventReader interface {
	// Read returns up to limit events after the cursor that pass the
	// filter, in cursor order, reusing buf. It never returns an event
	// that a later Read could precede with an earlier one.
	Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error)
	// Head returns the newest readable cursor known to this replica and a
	// channel closed when it changes. It does not query the database.
	Head() (head store.Cursor, changed <-chan struct{})
}

// CheckpointStore persists progress, fenced by the leader's epoch.
type CheckpointStore interface {
	// Claim bumps the projector's epoch for this replica and returns the
	// checkpoint to resume from. Commits under older epochs fail from now on.
	// A halted projector is not claimed (see Halt).
	Claim(ctx context.Context, projector string) (store.Checkpoint, error)
	// Commit applies the request's events through the projector's sink and
	// moves the checkpoint, atomically. store.ErrFenced means deposed;
	// *store.ApplyError names the event a sink failed on.
	Commit(ctx context.Context, req store.CommitRequest) error
	// SetStatus records the projector's status and last error under epoch.
	SetStatus(ctx context.Context, projector string, epoch int64, status, lastErr string) error
	// Halt records, under epoch, that the projector halted: on event (nil
	// for a sink that fails for every event alike), for the reason msg.
	// From then on Claim refuses the projector, with an error matching
	// store.ErrProjectorHalted, until an operator resumes it (or, for a
	// backend that fingerprints its sinks, a replica with another sink
	// claims it). store.ErrFenced means deposed: nothing was recorded.
	Halt(ctx context.Context, projector string, epoch int64, event *store.Cursor, msg string) error
}

// SinkFilter is optional. A backend that knows which event types a
// projector's sink acts on lets the loop pass over the others like
// filtered-out events: no commit for a batch that would write nothing, and
// only events a handler ran for count as applied.
type SinkFilter interface {
	Handles(projector, eventType string) bool
}

// SinkChecker is optional. A backend that can check a projector's sink
// without applying anything (for SQL: prepare and plan every handler) lets
// Run halt at the start of leadership on a handler that would fail for
// every event alike, instead of charging the first event for it.
type SinkChecker interface {
	// CheckSink returns an error matching store.ErrBadHandler when the
	// sink cannot work for any event, and any other error when the check
	// itself failed (worth retrying).
	CheckSink(ctx context.Context, projector string) error
}

// BatchBounder is optional. A backend whose sink must send a batch again
// exactly as it sent it before (the HTTP sink, whose receivers deduplicate
// by the batch's webhook-id, derived from its range) bounds the batch read
// after a cursor: Bound returns the last cursor the batch may hold. The
// loop then treats the batch as full, so the events after the bound are
// read next rather than passed over.
type BatchBounder interface {
	Bound(projector string, after store.Cursor) (last store.Cursor, ok bool)
}

// Lease is leadership of one projector.
type Lease interface {
	Done() <-chan struct{}
	Err() error
	Release(ctx context.Context) error
}

// Coordinator elects leaders.
type Coordinator interface {
	// TryAcquire returns a lease, or ErrNotLeader at once when another
	// replica holds it. It never waits for the lock.
	TryAcquire(ctx context.Context, projector string) (Lease, error)
	// Turn returns a channel closed when standbys should try again.
	Turn() <-chan struct{}
}

// Backend is everything a projector needs from the outside world.
type Backend interface {
	EventReader
	CheckpointStore
	Coordinator
}

// DeadlineCommitter is optional. A backend whose Commit of projector's
// batches honours store.CommitRequest.Deadline itself, as it would a
// deadline of its context, lets the loop bound each commit by setting it,
// instead of deriving a context with a timer for every batch.
type DeadlineCommitter interface {
	CommitsByDeadline(projector string) bool
}

// Operator is optional. A backend that records operator requests in the
// database lets a leader honour them at a batch boundary: a pause (the
// fence refuses commits meanwhile, whatever the loop knows) and retries of
// dead letters.
type Operator interface {
	// Paused reports whether an operator paused the projector.
	Paused(ctx context.Context, projector string) (bool, error)
	// RetryDeadLetters applies, under epoch and in the leader's fenced
	// transaction, the dead letters whose retry was requested, through the
	// current handlers. store.ErrFenced means deposed, store.ErrPaused
	// paused; an event that fails again is an outcome, not an error.
	RetryDeadLetters(ctx context.Context, projector string, epoch int64) ([]store.RetryOutcome, error)
}

// Requester is an Operator that reads both kinds of operator request in
// one query, with an answer at most maxAge old (0: read now). Without it a
// leader reads Paused and calls RetryDeadLetters at every check.
type Requester interface {
	Requests(ctx context.Context, projector string, maxAge time.Duration) (paused, retries bool, err error)
}
