package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Projector statuses recorded in projectord.checkpoints.status.
const (
	StatusRunning = "running"
	StatusHalted  = "halted"
	StatusStopped = "stopped"
)

// fencedCode is raised by projectord.advance when the epoch or cursor moved.
const fencedCode = "PJ001"

// invalidTxTermination is PostgreSQL's refusal of COMMIT or ROLLBACK inside a
// transaction block from a procedure or DO block.
const invalidTxTermination = "2D000"

// Checkpoint is a projector's persisted progress and leadership record.
type Checkpoint struct {
	Projector     string
	Cursor        Cursor
	Epoch         int64
	LeaderNode    string
	LeaderSince   time.Time
	Status        string
	LastError     string
	EventsApplied int64
	UpdatedAt     time.Time
}

// DeadLetter is a poison event recorded with the batch that skips it.
type DeadLetter struct {
	Event    Event
	Error    string
	Attempts int
}

// CommitRequest is one atomic step of a projector: apply Events through its
// sink, optionally record a dead letter, and move the checkpoint From -> To,
// fenced by Epoch.
type CommitRequest struct {
	Projector  string
	Epoch      int64
	From, To   Cursor
	Events     []Event
	DeadLetter *DeadLetter
}

// ApplyError says which event of a batch a sink statement failed on.
type ApplyError struct {
	Index int
	Err   error
}

func (e *ApplyError) Error() string { return fmt.Sprintf("event %d of batch: %v", e.Index, e.Err) }
func (e *ApplyError) Unwrap() error { return e.Err }

// Target is a database holding read models and, beside them, their
// checkpoints, so a batch's writes and its checkpoint commit together.
type Target struct {
	pool    *pgxpool.Pool
	timeout time.Duration
}

// NewTarget returns a target on pool; every statement is bounded by timeout.
func NewTarget(pool *pgxpool.Pool, timeout time.Duration) *Target {
	return &Target{pool: pool, timeout: timeout}
}

// Pool returns the target's pool.
func (t *Target) Pool() *pgxpool.Pool { return t.pool }

const checkpointCols = `projector, last_xid, last_position, epoch, coalesce(leader_node, ''),
	coalesce(leader_since, 'epoch'::timestamptz), status, coalesce(last_error, ''), events_applied, updated_at`

func scanCheckpoint(row pgx.Row, c *Checkpoint) error {
	return row.Scan(&c.Projector, &c.Cursor.XID, &c.Cursor.Position, &c.Epoch, &c.LeaderNode,
		&c.LeaderSince, &c.Status, &c.LastError, &c.EventsApplied, &c.UpdatedAt)
}

// Claim makes node the projector's leader: it bumps the epoch, so every
// commit by an earlier leader fails from now on, and returns the cursor to
// resume from. sourceID is the source cluster's system identifier (0 when
// unknown); a checkpoint written against another cluster yields
// ErrClusterChanged.
func (t *Target) Claim(ctx context.Context, projector, node string, sourceID int64) (Checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var c Checkpoint
	var stored *int64
	row := t.pool.QueryRow(ctx, `INSERT INTO projectord.checkpoints AS c
			(projector, epoch, leader_node, leader_since, status, system_identifier)
		VALUES ($1, 1, $2, now(), 'running', nullif($3::bigint, 0))
		ON CONFLICT (projector) DO UPDATE SET
			epoch = c.epoch + 1, leader_node = excluded.leader_node, leader_since = now(),
			status = 'running', updated_at = now(),
			-- a projector at the start (new, or reset) adopts the source's cluster
			system_identifier = CASE WHEN c.last_xid = '0' AND c.last_position = 0
				THEN coalesce(excluded.system_identifier, c.system_identifier)
				ELSE coalesce(c.system_identifier, excluded.system_identifier) END
		RETURNING `+checkpointCols+`, system_identifier`, projector, node, sourceID)
	err := row.Scan(&c.Projector, &c.Cursor.XID, &c.Cursor.Position, &c.Epoch, &c.LeaderNode,
		&c.LeaderSince, &c.Status, &c.LastError, &c.EventsApplied, &c.UpdatedAt, &stored)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("error claiming checkpoint of %s: %w", projector, err)
	}
	if sourceID != 0 && stored != nil && *stored != sourceID && !c.Cursor.IsZero() {
		return c, fmt.Errorf("%w: projector %s has cursor %s from cluster %d, the source is cluster %d; reset the projector (see README, Operations)",
			ErrClusterChanged, projector, c.Cursor, *stored, sourceID)
	}
	return c, nil
}

// Load returns the projector's checkpoint; ok is false when it has none.
func (t *Target) Load(ctx context.Context, projector string) (c Checkpoint, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	err = scanCheckpoint(t.pool.QueryRow(ctx, `SELECT `+checkpointCols+` FROM projectord.checkpoints WHERE projector = $1`, projector), &c)
	if errors.Is(err, pgx.ErrNoRows) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("error loading checkpoint of %s: %w", projector, err)
	}
	return c, true, nil
}

// List returns every checkpoint in the target, by projector name.
func (t *Target) List(ctx context.Context) ([]Checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	rows, err := t.pool.Query(ctx, `SELECT `+checkpointCols+` FROM projectord.checkpoints ORDER BY projector`)
	if err != nil {
		return nil, fmt.Errorf("error listing checkpoints: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Checkpoint, error) {
		var c Checkpoint
		return c, scanCheckpoint(r, &c)
	})
}

// Commit applies req in one round trip and one explicit transaction (a
// pipeline with a single Sync, BEGIN first and COMMIT last): the sink's
// statements, the dead letter, and last the fenced checkpoint move. Any
// failure rolls all of it back. The transaction is explicit so that no
// handler can end it: PostgreSQL refuses COMMIT and ROLLBACK inside a
// transaction block, even from a CALLed procedure or a DO block (2D000),
// where an implicit one would let them commit part of a batch past the
// fence. The fence goes last so that a leader deposed while its batch was
// in flight cannot commit it: the new leader's claim does not wait for the
// old leader's transaction, and the old leader's advance then finds the
// epoch moved. It returns ErrFenced when another leader has claimed the
// projector, *ApplyError when a sink statement failed on its event, and
// an error matching ErrBadHandler when a handler tried to end the
// transaction (which fails for every event alike).
func (t *Target) Commit(ctx context.Context, req CommitRequest, sink *SQLSink) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	// owner maps each queued query to the event it applies, -1 for ours.
	owner := make([]int, 1, len(req.Events)+4)
	owner[0] = -1
	if sink != nil {
		owner = sink.queue(b, req.Events, owner)
	}
	if dl := req.DeadLetter; dl != nil {
		e := &dl.Event
		b.Queue(`INSERT INTO projectord.dead_letters
			(projector, xid, position, stream_id, event_type, payload, metadata, error, attempts)
			VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9)`,
			req.Projector, e.XID, e.Position, e.StreamID, e.Type, jsonArg(e.Data), jsonArg(e.Metadata), dl.Error, dl.Attempts)
	}
	b.Queue(`SELECT projectord.advance($1, $2, $3, $4, $5, $6, $7)`,
		req.Projector, req.Epoch, req.From.XID, req.From.Position, req.To.XID, req.To.Position, int64(len(req.Events)))
	b.Queue("COMMIT")
	conn, err := t.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("error committing batch of %s: %w", req.Projector, err)
	}
	defer conn.Release()
	br := conn.SendBatch(ctx, b)
	var firstErr error
	for i := 0; i < b.Len(); i++ {
		if _, err := br.Exec(); err != nil {
			firstErr = classifyCommitError(i, owner, req.Events, sink, err)
			break
		}
	}
	closeErr := br.Close()
	if pc := conn.Conn().PgConn(); !pc.IsClosed() && pc.TxStatus() != 'I' {
		// A failure leaves the transaction open (PostgreSQL skipped the
		// COMMIT): end it here so the connection can be reused; the pool
		// discards a connection on which even this fails.
		_, _ = conn.Exec(ctx, "ROLLBACK")
	}
	if firstErr != nil {
		return firstErr
	}
	if closeErr != nil {
		return fmt.Errorf("error committing batch of %s: %w", req.Projector, closeErr)
	}
	return nil
}

// classifyCommitError maps the failure of queued query i to what the loop
// needs to know: deposed, an event's own fault, a handler that fails for
// every event, or anything else.
func classifyCommitError(i int, owner []int, events []Event, sink *SQLSink, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == fencedCode {
		return fmt.Errorf("%w: %s", ErrFenced, pgErr.Message)
	}
	if i < len(owner) && owner[i] >= 0 {
		if pgErr != nil && pgErr.Code == invalidTxTermination {
			return StatementProblem{EventType: sink.handler(events[owner[i]].Type).key,
				Err: fmt.Errorf("%w (a handler runs inside the batch's transaction: the procedure or DO block it runs may not COMMIT or ROLLBACK)", err)}
		}
		if IsEventError(err) {
			return &ApplyError{Index: owner[i], Err: err}
		}
	}
	return fmt.Errorf("error committing batch: %w", err)
}

// SetStatus records a projector's status and last error, fenced by epoch so
// a deposed leader cannot overwrite its successor's state.
func (t *Target) SetStatus(ctx context.Context, projector string, epoch int64, status, lastErr string) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	tag, err := t.pool.Exec(ctx, `UPDATE projectord.checkpoints
		SET status = $3, last_error = nullif($4, ''),
			last_error_at = CASE WHEN $4 = '' THEN last_error_at ELSE now() END, updated_at = now()
		WHERE projector = $1 AND epoch = $2`, projector, epoch, status, lastErr)
	if err != nil {
		return fmt.Errorf("error setting status of %s: %w", projector, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrFenced
	}
	return nil
}

// SystemIdentifier returns the cluster's system identifier, or 0 when the
// role may not read it (pg_control_system needs pg_monitor or superuser on
// some versions); the cluster-change check is then skipped.
func SystemIdentifier(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var id int64
	err := pool.QueryRow(ctx, `SELECT system_identifier FROM pg_control_system()`).Scan(&id)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("error reading system identifier: %w", err)
	}
	return id, nil
}

// ProjectorID returns the projector's stable lock id, registering it on first use.
func ProjectorID(ctx context.Context, pool *pgxpool.Pool, name string, timeout time.Duration) (int32, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var id int32
	err := pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO projectord.projectors (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id)
		SELECT id FROM ins UNION ALL SELECT id FROM projectord.projectors WHERE name = $1 LIMIT 1`, name).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("error registering projector %s: %w", name, err)
	}
	return id, nil
}

// ResetChannel carries the name of a projector that was reset, so its
// leader restarts from the new checkpoint at once.
const ResetChannel = "projectord_reset"

// Reset rebuilds a projector from the start, in one transaction: it runs
// the sink's reset SQL (emptying the read model), moves the checkpoint back
// to the beginning, clears a halted status and bumps the epoch. The bump
// fences the current leader, wherever it runs: its next commit fails, it
// steps down, and whoever leads next replays every event into the emptied
// read model. It returns the new epoch.
func (t *Target) Reset(ctx context.Context, projector, resetSQL string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var epoch int64
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		// The reset SQL goes first: a TRUNCATE taken after the checkpoint
		// row could deadlock with a leader's batch that wrote rows and now
		// waits for that row in advance().
		if resetSQL != "" {
			if _, err := tx.Exec(ctx, resetSQL); err != nil {
				return fmt.Errorf("reset SQL failed: %w", err)
			}
		}
		err := tx.QueryRow(ctx, `UPDATE projectord.checkpoints
			SET epoch = epoch + 1, last_xid = '0', last_position = 0, events_applied = 0,
				status = 'running', last_error = NULL, updated_at = now()
			WHERE projector = $1 RETURNING epoch`, projector).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("projector %s has no checkpoint in this database: nothing to reset", projector)
		}
		if err != nil {
			return err
		}
		// An idle leader commits nothing that could be fenced: tell it.
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, ResetChannel, projector)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("error resetting %s: %w", projector, err)
	}
	return epoch, nil
}
