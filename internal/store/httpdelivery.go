package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Delivery is the batch an HTTP projector's leader recorded before posting
// it: the events after From up to and including Last.
type Delivery struct {
	From, Last Cursor
	Events     int
}

// RecordDelivery records, fenced by epoch and by the checkpoint still being
// at d.From, the batch the leader is about to deliver; ErrFenced when
// another leader claimed the projector (or its checkpoint moved), and then
// the batch must not be sent. The checkpoint row is locked FOR SHARE so that
// a claim cannot slip between the check and the write: either the claim
// waits and then finds this record, or this write waits for the claim and
// then fails the check.
func (t *Target) RecordDelivery(ctx context.Context, projector string, epoch int64, d Delivery) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	tag, err := t.pool.Exec(ctx, `INSERT INTO projectord.http_deliveries AS h
			(projector, epoch, from_xid, from_position, last_xid, last_position, events)
		SELECT c.projector, c.epoch, $3, $4, $5, $6, $7 FROM projectord.checkpoints c
		WHERE c.projector = $1 AND c.epoch = $2 AND c.last_xid = $3 AND c.last_position = $4
			AND c.paused_at IS NULL
		FOR SHARE
		ON CONFLICT (projector) DO UPDATE SET epoch = excluded.epoch,
			from_xid = excluded.from_xid, from_position = excluded.from_position,
			last_xid = excluded.last_xid, last_position = excluded.last_position,
			events = excluded.events, recorded_at = now()`,
		projector, epoch, d.From.XID, d.From.Position, d.Last.XID, d.Last.Position, d.Events)
	if err != nil {
		return fmt.Errorf("error recording the delivery of %s: %w", projector, err)
	}
	if tag.RowsAffected() == 0 {
		return t.whyNotRecorded(ctx, projector, epoch)
	}
	return nil
}

// whyNotRecorded tells a pause from a fence after RecordDelivery matched no
// row: a paused projector's leader keeps its leadership and waits for the
// resume (ErrPaused), a fenced one steps down (ErrFenced).
func (t *Target) whyNotRecorded(ctx context.Context, projector string, epoch int64) error {
	var paused bool
	err := t.pool.QueryRow(ctx, `SELECT paused_at IS NOT NULL FROM projectord.checkpoints
		WHERE projector = $1 AND epoch = $2`, projector, epoch).Scan(&paused)
	if err == nil && paused {
		return fmt.Errorf("%w: projector %s", ErrPaused, projector)
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("error recording the delivery of %s: %w", projector, err)
	}
	return ErrFenced
}

// LastDelivery returns the batch last recorded for projector; ok is false
// when none was.
func (t *Target) LastDelivery(ctx context.Context, projector string) (d Delivery, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	err = t.pool.QueryRow(ctx, `SELECT from_xid, from_position, last_xid, last_position, events
		FROM projectord.http_deliveries WHERE projector = $1`, projector).
		Scan(&d.From.XID, &d.From.Position, &d.Last.XID, &d.Last.Position, &d.Events)
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, false, nil
	}
	if err != nil {
		return Delivery{}, false, fmt.Errorf("error reading the last delivery of %s: %w", projector, err)
	}
	return d, true, nil
}

// Resets returns how many times projector was reset (its reset generation):
// an HTTP projector puts it in every webhook-id, so that a replay after a
// reset is not deduplicated away as the batches already acknowledged.
func (t *Target) Resets(ctx context.Context, projector string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var n int64
	err := t.pool.QueryRow(ctx, `SELECT resets FROM projectord.checkpoints WHERE projector = $1`, projector).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("error reading the reset generation of %s: %w", projector, err)
	}
	return n, nil
}

// Advance moves the checkpoint req.From -> req.To, counting req.Events,
// fenced like Commit, in one statement and one round trip: for a batch with
// nothing to write beside the move (an HTTP batch the receiver
// acknowledged), an explicit transaction would only add round trips.
// projectord.advance() is one UPDATE, atomic on its own. It returns
// ErrFenced when another leader claimed the projector.
func (t *Target) Advance(ctx context.Context, req CommitRequest) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	_, err := t.pool.Exec(ctx, `SELECT projectord.advance($1, $2, $3, $4, $5, $6, $7)`,
		req.Projector, req.Epoch, req.From.XID, req.From.Position, req.To.XID, req.To.Position, int64(len(req.Events)))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == fencedCode {
		return fmt.Errorf("%w: %s", ErrFenced, pgErr.Message)
	}
	if pgErr != nil && pgErr.Code == pausedCode {
		return fmt.Errorf("%w: %s", ErrPaused, pgErr.Message)
	}
	if err != nil {
		return fmt.Errorf("error moving the checkpoint of %s to %s: %w", req.Projector, req.To, err)
	}
	t.committed(false, 1)
	return nil
}
