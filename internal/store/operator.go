package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// PauseChannel carries the name of a projector that was paused, so its
// leader stops at once rather than at its next refused commit.
const PauseChannel = "projectord_pause"

// RetryChannel carries the name of a projector whose dead letters an
// operator asked to retry, so its leader handles them at once.
const RetryChannel = "projectord_retry"

// ErrNoCheckpoint means a projector has no checkpoint in the target: it has
// never run there, so an operator command has nothing to act on.
var ErrNoCheckpoint = errors.New("no checkpoint")

// Pause records that by paused the projector. From its commit on,
// projectord.advance refuses every batch of the projector (ErrPaused), so
// nothing is applied until Resume; a leader keeps its lock and waits, and a
// new leader's claim keeps the pause. It reports whether the projector was
// already paused (then nothing changes) and returns ErrNoCheckpoint when
// there is no checkpoint to pause.
func (t *Target) Pause(ctx context.Context, projector, by string) (already bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	err = pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		var paused bool
		err := tx.QueryRow(ctx, `SELECT paused_at IS NOT NULL FROM projectord.checkpoints WHERE projector = $1 FOR UPDATE`,
			projector).Scan(&paused)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w for projector %s in this database (it has never run here): nothing to pause", ErrNoCheckpoint, projector)
		}
		if err != nil || paused {
			already = paused
			return err
		}
		// A halted projector stays halted (its status says so) and is
		// paused too: resume ends both.
		_, err = tx.Exec(ctx, `UPDATE projectord.checkpoints
			SET paused_by = $2, paused_at = now(), updated_at = now(),
				status = CASE WHEN status = 'halted' THEN status ELSE 'paused' END
			WHERE projector = $1`, projector, by)
		return err
	})
	if err != nil && !errors.Is(err, ErrNoCheckpoint) {
		return false, fmt.Errorf("error pausing %s: %w", projector, err)
	}
	return already, err
}

// Paused reports whether the projector is paused. A projector without a
// checkpoint is not.
func (t *Target) Paused(ctx context.Context, projector string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var paused bool
	err := t.pool.QueryRow(ctx, `SELECT paused_at IS NOT NULL FROM projectord.checkpoints WHERE projector = $1`, projector).Scan(&paused)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("error reading whether %s is paused: %w", projector, err)
	}
	return paused, nil
}

// PauseRecord says who paused a projector and when.
type PauseRecord struct {
	By string
	At time.Time
}

// PauseOf returns the projector's pause record, nil when it is not paused.
func (t *Target) PauseOf(ctx context.Context, projector string) (*PauseRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var r PauseRecord
	err := t.pool.QueryRow(ctx, `SELECT coalesce(paused_by, ''), paused_at FROM projectord.checkpoints
		WHERE projector = $1 AND paused_at IS NOT NULL`, projector).Scan(&r.By, &r.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("error reading the pause of %s: %w", projector, err)
	}
	return &r, nil
}

// DeadLetterRow is one row of projectord.dead_letters, as an operator sees it.
type DeadLetterRow struct {
	ID            int64
	Projector     string
	Cursor        Cursor
	EventID       string
	EventType     string
	StreamID      string
	StreamVersion *int64
	Error         string
	Attempts      int
	FailedAt      time.Time
	// RetryRequestedAt is when a retry was asked for and not yet handled.
	RetryRequestedAt *time.Time
	// RetriedAt is when the leader last retried it and the event failed again.
	RetriedAt *time.Time
}

const deadLetterCols = `id, projector, xid, position, coalesce(event_id, ''), coalesce(event_type, ''), coalesce(stream_id, ''),
	stream_version, error, attempts, failed_at, retry_requested_at, retried_at`

func scanDeadLetter(r pgx.CollectableRow) (DeadLetterRow, error) {
	var d DeadLetterRow
	err := r.Scan(&d.ID, &d.Projector, &d.Cursor.XID, &d.Cursor.Position, &d.EventID, &d.EventType, &d.StreamID,
		&d.StreamVersion, &d.Error, &d.Attempts, &d.FailedAt, &d.RetryRequestedAt, &d.RetriedAt)
	return d, err
}

// DeadLetters lists the dead letters of projector ("" for every projector),
// by projector and cursor.
func (t *Target) DeadLetters(ctx context.Context, projector string) ([]DeadLetterRow, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `SELECT `+deadLetterCols+` FROM projectord.dead_letters
		WHERE $1 = '' OR projector = $1 ORDER BY projector, xid, position, id`, projector)
	if err != nil {
		return nil, fmt.Errorf("error listing dead letters: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("error listing dead letters: %w", err)
	}
	return out, nil
}

// DeadLettersByID returns the rows among ids that still exist.
func (t *Target) DeadLettersByID(ctx context.Context, ids []int64) ([]DeadLetterRow, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `SELECT `+deadLetterCols+` FROM projectord.dead_letters WHERE id = ANY($1) ORDER BY xid, position, id`, ids)
	if err != nil {
		return nil, fmt.Errorf("error reading dead letters: %w", err)
	}
	out, err := pgx.CollectRows(rows, scanDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("error reading dead letters: %w", err)
	}
	return out, nil
}

// ErrNoDeadLetter means no dead letter of the projector has the position
// asked for.
var ErrNoDeadLetter = errors.New("no such dead letter")

// RequestRetry marks the projector's dead letters for retry: the one at
// position (every one when position is nil), and returns the rows marked.
// It changes nothing and returns ErrNoDeadLetter when there is none to
// mark. The leader applies them (RetryDeadLetters); the caller notifies it
// on RetryChannel.
func (t *Target) RequestRetry(ctx context.Context, projector string, position *int64) ([]DeadLetterRow, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `UPDATE projectord.dead_letters
		SET retry_requested_at = now()
		WHERE projector = $1 AND ($2::bigint IS NULL OR position = $2)
		RETURNING `+deadLetterCols, projector, position)
	if err != nil {
		return nil, fmt.Errorf("error requesting the retry of dead letters of %s: %w", projector, err)
	}
	out, err := pgx.CollectRows(rows, scanDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("error requesting the retry of dead letters of %s: %w", projector, err)
	}
	if len(out) == 0 {
		return nil, noDeadLetter(projector, position)
	}
	return out, nil
}

func noDeadLetter(projector string, position *int64) error {
	if position == nil {
		return fmt.Errorf("%w: projector %s has no dead letters", ErrNoDeadLetter, projector)
	}
	return fmt.Errorf("%w: projector %s has no dead letter at position %d (see `projectord dead-letters list %s`)",
		ErrNoDeadLetter, projector, *position, projector)
}

// DiscardDeadLetter deletes the projector's dead letter at position, and
// returns it; ErrNoDeadLetter when there is none. Its event is then lost
// for this projector, which is what the operator asked for.
func (t *Target) DiscardDeadLetter(ctx context.Context, projector string, position int64) ([]DeadLetterRow, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `DELETE FROM projectord.dead_letters WHERE projector = $1 AND position = $2
		RETURNING `+deadLetterCols, projector, position)
	if err != nil {
		return nil, fmt.Errorf("error discarding the dead letter of %s at %d: %w", projector, position, err)
	}
	out, err := pgx.CollectRows(rows, scanDeadLetter)
	if err != nil {
		return nil, fmt.Errorf("error discarding the dead letter of %s at %d: %w", projector, position, err)
	}
	if len(out) == 0 {
		return nil, noDeadLetter(projector, &position)
	}
	return out, nil
}

// RetryOutcome is what became of one requested dead letter in
// RetryDeadLetters.
type RetryOutcome struct {
	Cursor Cursor
	// Err is nil when the event applied (the row is gone), else why it
	// failed again (the row stays, with this error and one more attempt).
	Err error
}

// RetryDeadLetters is the leader's half of a dead-letter retry: under
// epoch, in one transaction, it applies every dead letter of the projector
// whose retry was requested through sink, in cursor order, each in a
// savepoint, and deletes the rows that applied; a row whose event fails
// again keeps it, with the new error, one more attempt and its request
// cleared. The transaction first locks the checkpoint row under epoch and
// unpaused, as advance() does, so a deposed or paused leader applies
// nothing (ErrFenced, ErrPaused), and the row locks make a second request
// or a second leader find each row applied once or not at all.
//
// An error the event is not charged for (the connection, a lock wait, a
// missing table; store.Classify) rolls everything back and is returned:
// the requests stay for the next attempt.
func (t *Target) RetryDeadLetters(ctx context.Context, projector string, epoch int64, sink *SQLSink) ([]RetryOutcome, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var out []RetryOutcome
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		out = out[:0]
		var paused bool
		err := tx.QueryRow(ctx, `SELECT paused_at IS NOT NULL FROM projectord.checkpoints
			WHERE projector = $1 AND epoch = $2 FOR UPDATE`, projector, epoch).Scan(&paused)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: projector %s is no longer led under epoch %d", ErrFenced, projector, epoch)
		}
		if err != nil {
			return err
		}
		if paused {
			return fmt.Errorf("%w: projector %s", ErrPaused, projector)
		}
		rows, err := tx.Query(ctx, `SELECT id, xid, position, coalesce(event_id, ''), coalesce(event_type, ''), event_type IS NULL,
				coalesce(stream_id, ''), coalesce(stream_version, 0), coalesce(created_at, 'epoch'::timestamptz),
				payload::text, metadata::text, payload IS NULL AND payload_raw IS NOT NULL
			FROM projectord.dead_letters
			WHERE projector = $1 AND retry_requested_at IS NOT NULL
			ORDER BY xid, position, id FOR UPDATE`, projector)
		if err != nil {
			return err
		}
		type letter struct {
			id              int64
			e               Event
			typeNull, unfit bool
		}
		letters, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (letter, error) {
			var l letter
			var data, meta *string
			err := r.Scan(&l.id, &l.e.XID, &l.e.Position, &l.e.EventID, &l.e.Type, &l.typeNull, &l.e.StreamID,
				&l.e.StreamVersion, &l.e.CreatedAt, &data, &meta, &l.unfit)
			if data != nil {
				l.e.Data = []byte(*data)
			}
			if meta != nil {
				l.e.Metadata = []byte(*meta)
			}
			return l, err
		})
		if err != nil {
			return err
		}
		for _, l := range letters {
			var failed error
			switch {
			case l.unfit:
				// The source row's data was not JSON: no handler can take it.
				failed = errors.New("the event's data is not valid JSON (kept in payload_raw); discard it or fix the source row and reset")
			case l.typeNull:
				failed = errors.New("the event has no type, so no handler is meant for it")
			default:
				failed, err = applyOne(ctx, tx, sink, &l.e)
				if err != nil {
					return err
				}
			}
			if failed == nil {
				if _, err := tx.Exec(ctx, `DELETE FROM projectord.dead_letters WHERE id = $1`, l.id); err != nil {
					return err
				}
			} else if _, err := tx.Exec(ctx, `UPDATE projectord.dead_letters
				SET retry_requested_at = NULL, retried_at = clock_timestamp(), error = $2, attempts = attempts + 1
				WHERE id = $1`, l.id, failed.Error()); err != nil {
				return err
			}
			out = append(out, RetryOutcome{Cursor: l.e.Cursor, Err: failed})
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrFenced) || errors.Is(err, ErrPaused) {
			return nil, err
		}
		return nil, fmt.Errorf("error retrying the dead letters of %s: %w", projector, err)
	}
	return out, nil
}

// applyOne runs e's handler in a savepoint. failed is the event's own
// failure (rolled back to the savepoint, so the transaction goes on); err
// is any other, which ends the transaction.
func applyOne(ctx context.Context, tx pgx.Tx, sink *SQLSink, e *Event) (failed, err error) {
	st := sink.handler(e.Type)
	if st == nil {
		return fmt.Errorf("no handler for event type %q in the current configuration", e.Type), nil
	}
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := sp.Exec(ctx, st.sql, st.args(e)...); err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		if Classify(err).CountsAgainstEvent() {
			return err, nil
		}
		return nil, err
	}
	return nil, sp.Commit(ctx)
}
