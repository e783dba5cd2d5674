package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
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

// requestSnapshot holds what the last read of every projector's requests
// found, for RequestsOf.
type requestSnapshot struct {
	mu      sync.Mutex
	at      time.Time
	paused  map[string]bool
	retries map[string]bool
}

// RequestsOf reports whether the projector is paused and whether any of
// its dead letters await a retry (a projector without a checkpoint has
// neither), with an answer at most maxAge old: the periodic
// check every leader makes in case it missed a NOTIFY. Within maxAge the
// answer comes from the last read, which is of every projector of this
// target at once, so the checks of all the leaders on a target cost one
// query per maxAge, however many they are. maxAge 0 reads this projector
// now (after a NOTIFY, which the snapshot may predate).
func (t *Target) RequestsOf(ctx context.Context, projector string, maxAge time.Duration) (paused, retries bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	if maxAge <= 0 {
		err = t.pool.QueryRow(ctx, `SELECT
				coalesce((SELECT paused_at IS NOT NULL FROM projectord.checkpoints WHERE projector = $1), false),
				EXISTS (SELECT 1 FROM projectord.dead_letters WHERE projector = $1 AND retry_requested_at IS NOT NULL)`,
			projector).Scan(&paused, &retries)
		if err != nil {
			return false, false, fmt.Errorf("error reading the operator requests of %s: %w", projector, err)
		}
		return paused, retries, nil
	}
	r := &t.requests
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.at) >= maxAge {
		ps, rs := map[string]bool{}, map[string]bool{}
		rows, err := t.pool.Query(ctx, `SELECT projector, true, false FROM projectord.checkpoints WHERE paused_at IS NOT NULL
			UNION ALL
			SELECT DISTINCT projector, false, true FROM projectord.dead_letters WHERE retry_requested_at IS NOT NULL`)
		if err != nil {
			return false, false, fmt.Errorf("error reading operator requests: %w", err)
		}
		var name string
		var p, q bool
		_, err = pgx.ForEachRow(rows, []any{&name, &p, &q}, func() error {
			ps[name] = ps[name] || p
			rs[name] = rs[name] || q
			return nil
		})
		if err != nil {
			return false, false, fmt.Errorf("error reading operator requests: %w", err)
		}
		r.at, r.paused, r.retries = time.Now(), ps, rs
	}
	return r.paused[projector], r.retries[projector], nil
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
	// Outcomes are read by the `dead-letters retry` that asked, within its
	// wait; a week keeps them for any such wait at little cost.
	if _, err := t.pool.Exec(ctx, `DELETE FROM projectord.dead_letter_retries WHERE at < now() - interval '7 days'`); err != nil {
		return nil, fmt.Errorf("error pruning dead-letter retry outcomes: %w", err)
	}
	// Rows are locked in cursor order, as the leader's retry locks them:
	// two orders could deadlock.
	rows, err := t.pool.Query(ctx, `UPDATE projectord.dead_letters d
		SET retry_requested_at = now()
		FROM (SELECT id AS sid FROM projectord.dead_letters
			WHERE projector = $1 AND ($2::bigint IS NULL OR position = $2)
			ORDER BY xid, position, id FOR UPDATE) s
		WHERE d.id = s.sid
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
	// failed again or was refused (the row stays, its request cleared).
	Err error
}

// ErrAheadOfCheckpoint refuses the retry of a dead letter the checkpoint
// has not reached: the projector will read that event again when it does,
// so applying it now would apply it twice.
var ErrAheadOfCheckpoint = errors.New("the event is ahead of the checkpoint")

// retryChunk bounds the rows one retry transaction handles. Each chunk is
// a transaction of its own, so a large retry makes progress chunk by chunk
// and holds the checkpoint row (which pause, resume and claims wait for)
// only for one chunk at a time.
const retryChunk = 100

// RetryDeadLetters is the leader's half of a dead-letter retry: under
// epoch, it applies the dead letters of the projector whose retry was
// requested through sink, in cursor order, each in a savepoint, and
// deletes the rows that applied; a row whose event fails again keeps it,
// with the new error, one more attempt and its request cleared. It works in
// chunks (retryChunk rows, or half the target's timeout, whichever comes
// first), each its own transaction within the timeout, which first locks
// the checkpoint row under epoch and unpaused, as advance() does, so a
// deposed or paused leader applies nothing (ErrFenced, ErrPaused), and the
// row locks make a second request or a second leader find each row applied
// once or not at all.
//
// Only rows at or behind the checkpoint are applied: the projector has
// passed their events without applying them. A row ahead of it (written
// before a reset that did not clear it, or by hand) is refused with
// ErrAheadOfCheckpoint, as is a row whose source was bad (a NULL or an
// undecodable column): the live path never hands such a row to a handler.
//
// An error the event is not charged for (the connection, a lock wait, a
// missing table; store.Classify) rolls the chunk back and is returned with
// the outcomes of the chunks committed before it: the requests left stay
// for the next attempt.
func (t *Target) RetryDeadLetters(ctx context.Context, projector string, epoch int64, sink *SQLSink) ([]RetryOutcome, error) {
	var out []RetryOutcome
	for {
		outs, more, err := t.retryChunk(ctx, projector, epoch, sink)
		out = append(out, outs...)
		if err != nil {
			if errors.Is(err, ErrFenced) || errors.Is(err, ErrPaused) {
				return out, err
			}
			return out, fmt.Errorf("error retrying the dead letters of %s: %w", projector, err)
		}
		if !more {
			return out, nil
		}
	}
}

// retryLetter is a requested dead letter as a retry reads it.
type retryLetter struct {
	id  int64
	e   Event
	bad string
}

func (t *Target) retryChunk(ctx context.Context, projector string, epoch int64, sink *SQLSink) (out []RetryOutcome, more bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	start := time.Now()
	err = pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		out, more = out[:0], false
		// A deferred constraint would otherwise fail at COMMIT, where no
		// savepoint can tell whose event it was, and roll back every row
		// with it, on every attempt. The transaction holds nothing but
		// these retries, so nothing else needs the deferral.
		if _, err := tx.Exec(ctx, `SET CONSTRAINTS ALL IMMEDIATE`); err != nil {
			return err
		}
		var paused bool
		var cp Cursor
		err := tx.QueryRow(ctx, `SELECT paused_at IS NOT NULL, last_xid, last_position FROM projectord.checkpoints
			WHERE projector = $1 AND epoch = $2 FOR UPDATE`, projector, epoch).Scan(&paused, &cp.XID, &cp.Position)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: projector %s is no longer led under epoch %d", ErrFenced, projector, epoch)
		}
		if err != nil {
			return err
		}
		if paused {
			return fmt.Errorf("%w: projector %s", ErrPaused, projector)
		}
		// Cursor order, as RequestRetry locks them, so the two never
		// deadlock on each other's rows.
		rows, err := tx.Query(ctx, `SELECT id, xid, position, coalesce(event_id, ''), coalesce(event_type, ''),
				coalesce(stream_id, ''), coalesce(stream_version, 0), coalesce(created_at, 'epoch'::timestamptz),
				payload::text, metadata::text,
				concat_ws('; ', source_problems,
					CASE WHEN event_type IS NULL AND source_problems IS NULL THEN 'event_type is NULL' END,
					CASE WHEN payload_raw IS NOT NULL THEN 'data is not valid JSON (kept in payload_raw)' END,
					CASE WHEN metadata_raw IS NOT NULL THEN 'metadata is not valid JSON (kept in metadata_raw)' END)
			FROM projectord.dead_letters
			WHERE projector = $1 AND retry_requested_at IS NOT NULL
			ORDER BY xid, position, id LIMIT $2 FOR UPDATE`, projector, retryChunk+1)
		if err != nil {
			return err
		}
		letters, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (retryLetter, error) {
			var l retryLetter
			var data, meta *string
			err := r.Scan(&l.id, &l.e.XID, &l.e.Position, &l.e.EventID, &l.e.Type, &l.e.StreamID,
				&l.e.StreamVersion, &l.e.CreatedAt, &data, &meta, &l.bad)
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
		for i, l := range letters {
			if i == retryChunk || (i > 0 && time.Since(start) > t.timeout/2) {
				more = true
				break
			}
			var failed error
			switch {
			case l.bad != "":
				// As on the live path, where such a row is poison before
				// any statement runs: its values were never the event's.
				failed = fmt.Errorf("the source row is bad (%s): no handler can take it; discard it, or fix the source row and reset", l.bad)
			case cp.Less(l.e.Cursor):
				failed = fmt.Errorf("%w (%s): the projector applies it when it reads that far; discard this dead letter", ErrAheadOfCheckpoint, cp)
			default:
				failed, err = applyOne(ctx, tx, sink, &l.e)
				if err != nil {
					return err
				}
			}
			if failed == nil {
				if _, err := tx.Exec(ctx, `WITH d AS (DELETE FROM projectord.dead_letters WHERE id = $1 RETURNING id)
					INSERT INTO projectord.dead_letter_retries (dead_letter_id, projector, outcome)
					SELECT id, $2, 'applied' FROM d`, l.id, projector); err != nil {
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
		return nil, false, err
	}
	return out, more, nil
}

// RetryApplied returns, among ids, the dead letters a retry applied (their
// rows are gone). A row that is gone and not among them was removed without
// being applied: discarded, or cleared by a reset.
func (t *Target) RetryApplied(ctx context.Context, ids []int64) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `SELECT dead_letter_id FROM projectord.dead_letter_retries
		WHERE dead_letter_id = ANY($1) AND outcome = 'applied'`, ids)
	if err != nil {
		return nil, fmt.Errorf("error reading retry outcomes: %w", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("error reading retry outcomes: %w", err)
	}
	out := make(map[int64]bool, len(got))
	for _, id := range got {
		out[id] = true
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
