package httpsink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/projectord/projectord/internal/store"
)

// Commit delivers req's events and moves the checkpoint From -> To, fenced,
// after a 2xx; it is the HTTP projector's runner.CheckpointStore.Commit on
// t, the target in database.url that holds its checkpoint. What it returns
// means to the loop what the SQL sink's answers mean:
//   - nil: delivered and checkpointed.
//   - store.ErrFenced: another leader claimed the projector; nothing more
//     is sent by this one.
//   - store.ErrPaused: an operator paused the projector; nothing more is
//     sent until the resume. A request already in flight when the pause
//     landed may have reached the receiver: its checkpoint move is refused,
//     and it comes again, same webhook-id, after the resume.
//   - *store.ApplyError naming an event: the receiver named it
//     ({"failed_position": N}), or the batch was that event alone. Index -1:
//     the receiver refused the batch without naming an event; the loop
//     halves it, as for an SQL batch that failed at commit.
//   - any other error: the receiver or the network failed (retryable
//     statuses until the commit's time ran out, TLS, refused connections),
//     never an event's fault; the loop retries the batch after its backoff,
//     and the batch comes again with the same range and webhook-id (Bound).
//
// A request with no events (an advance over filtered-out events, a skip, a
// dead letter) is only a checkpoint move, and sends nothing.
func (s *Sink) Commit(ctx context.Context, req store.CommitRequest, t *store.Target) error {
	for i := range req.Events {
		if bad := req.Events[i].Bad; bad != nil {
			return &store.ApplyError{Index: i, Err: bad}
		}
	}
	if len(req.Events) == 0 {
		if err := t.Commit(ctx, req, nil); err != nil {
			return err
		}
		s.advanced(req.To)
		return nil
	}
	last := req.Events[len(req.Events)-1].Cursor
	d := store.Delivery{From: req.From, Last: last, Events: len(req.Events)}
	record := func(ctx context.Context) error { return t.RecordDelivery(ctx, req.Projector, req.Epoch, d) }
	// Recorded, fenced, before anything is sent: a deposed leader sends
	// nothing new, and whoever leads next knows which range to send first.
	if err := record(ctx); err != nil {
		return unsplittable(req.Projector, "recording the batch before delivery", err)
	}
	s.mu.Lock()
	s.bound = &d
	gen := s.gen
	s.mu.Unlock()
	id := WebhookID(req.Projector, gen, req.Events)
	s.body = AppendBatch(s.body[:0], req.Projector, gen, req.Events)
	// Delivery leaves a quarter of the commit's time to the checkpoint
	// move: an acknowledged batch should not lose its move to a retry
	// that used up the deadline.
	dctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		dctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Until(dl)/4))
		defer cancel()
	}
	o, err := s.deliver(dctx, id, s.body, record)
	if err != nil {
		return unsplittable(req.Projector, "", err) // its text names projector and receiver
	}
	if o.status/100 == 2 {
		if err := t.Advance(ctx, req); err != nil {
			return unsplittable(req.Projector, "moving the checkpoint after the receiver acknowledged batch "+id, err)
		}
		s.advanced(req.To)
		return nil
	}
	// A 4xx other than the retryable ones: the receiver refused the batch.
	cause := fmt.Errorf("projector %s: the receiver %s refused the batch %s with %d", req.Projector, s.target, id, o.status)
	if o.named {
		for i := range req.Events {
			if req.Events[i].Position == o.failed {
				return &store.ApplyError{Index: i, Err: fmt.Errorf("%w, naming event at position %d", cause, o.failed)}
			}
		}
		cause = fmt.Errorf("%w, naming position %d, which is not in the batch", cause, o.failed)
	}
	if len(req.Events) == 1 {
		return &store.ApplyError{Index: 0, Err: cause}
	}
	return &store.ApplyError{Index: -1, Err: cause}
}

// unsplittable is err for the loop to retry as a whole, never to split:
// once a batch may have been acknowledged, its events must come again
// under its own webhook-id, and a failure of ours or the network's names no
// event. The cause is kept as text: its chain could hold a deadline, which
// the loop would take for a batch too big to commit in time (and halve).
// Fencing passes through: it ends the leadership; so does a pause, which
// the loop waits out (the batch comes again, same id, after the resume).
func unsplittable(projector, doing string, err error) error {
	if errors.Is(err, store.ErrFenced) || errors.Is(err, store.ErrPaused) {
		return err
	}
	if doing == "" {
		return errors.New(err.Error())
	}
	return fmt.Errorf("projector %s: error %s: %v", projector, doing, err)
}

// advanced forgets the recorded batch once the checkpoint is past it.
func (s *Sink) advanced(to store.Cursor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound != nil && !to.Less(s.bound.Last) {
		s.bound = nil
	}
}

// Claimed is told the checkpoint a new leadership starts from. If the last
// recorded batch starts there, it may have reached the receiver (2xx) with
// its checkpoint move lost: the first batch is bounded to it (Bound).
func (s *Sink) Claimed(ctx context.Context, projector string, cp store.Checkpoint, t *store.Target) error {
	gen, err := t.Resets(ctx, projector)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.bound, s.gen = nil, gen
	s.mu.Unlock()
	d, ok, err := t.LastDelivery(ctx, projector)
	if err != nil || !ok || d.From != cp.Cursor {
		return err
	}
	s.mu.Lock()
	s.bound = &d
	s.mu.Unlock()
	return nil
}

// Bound implements the loop's batch bound: a batch read after the start of
// the recorded batch ends where that one ended, so it is sent again with the
// same events and the same webhook-id.
func (s *Sink) Bound(after store.Cursor) (store.Cursor, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound == nil || s.bound.From != after {
		return store.Cursor{}, false
	}
	return s.bound.Last, true
}

// Recorded returns the recorded batch a batch read after `after` must
// repeat, if any (Bound's, whole): the loop reads it itself (ReadBound), so
// that a smaller batch_size or a replica behind the recorded end cannot
// make the batch shorter.
func (s *Sink) Recorded(after store.Cursor) (store.Delivery, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound == nil || s.bound.From != after {
		return store.Delivery{}, false
	}
	return *s.bound, true
}

// Fingerprint identifies the sink for halts (store.Target.ClaimSink): a
// projector halted on an event stays halted for replicas posting to the
// same URL, and a replica configured with another URL may claim it. Only
// the URL counts, with any password masked: neither secret nor headers are
// stored anywhere.
func (s *Sink) Fingerprint() string {
	sum := sha256.Sum256([]byte(s.target))
	return "http:" + hex.EncodeToString(sum[:8])
}

// IsRefusal reports whether err is the receiver refusing a batch (a 4xx
// that is not retryable), as opposed to a failure to deliver it.
func IsRefusal(err error) bool {
	var ae *store.ApplyError
	return errors.As(err, &ae)
}
