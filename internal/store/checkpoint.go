package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
	// StatusPaused is recorded while an operator's pause holds (Pause):
	// claims and status writes keep it until Resume.
	StatusPaused = "paused"
)

// fencedCode is raised by projectord.advance when the epoch or cursor moved.
const fencedCode = "PJ001"

// pausedCode is raised by projectord.advance for a paused projector.
const pausedCode = "PJ002"

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
	// Ordering is the source.ordering that wrote Cursor; "" at the start.
	Ordering Ordering
	// PositionFloor: every event at or below this position is done, whatever
	// its xid (a position checkpoint converted to xid8); 0 for none.
	PositionFloor int64
	// LastErrorAt is when LastError was written (zero if never).
	LastErrorAt time.Time
	// Halt is the halt record while Status is halted by a leader (Halt);
	// nil otherwise.
	Halt *HaltRecord
}

// HaltRecord says who halted a projector, when, and on what.
type HaltRecord struct {
	// By is the node that halted it.
	By string
	At time.Time
	// Event is the event it halted on; nil when a handler fails for every
	// event alike (store.ErrBadHandler).
	Event *Cursor
	// Sink is the fingerprint of the sink that halted it (SQLSink.Fingerprint).
	Sink string
}

// AtStart reports whether the checkpoint has no progress at all: such a
// checkpoint fits any ordering and any source cluster.
func (c Checkpoint) AtStart() bool { return c.Cursor.IsZero() && c.PositionFloor == 0 }

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
	// Deadline, when set, bounds the commit as a deadline of its context
	// would (or the target's timeout, whichever comes first), without the
	// timer such a context costs every batch: a batch committed in a group
	// is bounded by its group's context, and a timer is armed only for a
	// batch committed alone.
	Deadline time.Time
}

// Expired reports whether r's deadline has passed.
func (r *CommitRequest) Expired() bool {
	return !r.Deadline.IsZero() && !time.Now().Before(r.Deadline)
}

// bound is ctx limited by the target's timeout and by req's deadline.
func (t *Target) bound(ctx context.Context, req *CommitRequest) (context.Context, context.CancelFunc) {
	d := time.Now().Add(t.timeout)
	if !req.Deadline.IsZero() && req.Deadline.Before(d) {
		d = req.Deadline
	}
	return context.WithDeadline(ctx, d)
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
	// groups queues the batches of a group commit; nil while it is off.
	groups *groupQueue
	// onCommit, if set, learns of every transaction committed for batches.
	onCommit func(grouped bool, batches int)
	// requests is the last read of every projector's operator requests,
	// shared by the leaders of this target (RequestsOf).
	requests requestSnapshot
}

// NewTarget returns a target on pool; every statement is bounded by timeout.
func NewTarget(pool *pgxpool.Pool, timeout time.Duration) *Target {
	return &Target{pool: pool, timeout: timeout}
}

// Pool returns the target's pool.
func (t *Target) Pool() *pgxpool.Pool { return t.pool }

const checkpointCols = `projector, last_xid, last_position, epoch, coalesce(leader_node, ''),
	coalesce(leader_since, 'epoch'::timestamptz), status, coalesce(last_error, ''), events_applied, updated_at,
	coalesce(ordering, ''), position_floor, coalesce(last_error_at, 'epoch'::timestamptz),
	halted_at IS NOT NULL AND status = 'halted', coalesce(halted_by, ''), coalesce(halted_at, 'epoch'::timestamptz),
	halted_position IS NOT NULL, coalesce(halted_xid, '0'), coalesce(halted_position, 0), coalesce(halted_sink, '')`

// checkpointScan receives one row of checkpointCols.
type checkpointScan struct {
	c                Checkpoint
	halted, hasEvent bool
	halt             HaltRecord
	haltXID          uint64
	haltPos          int64
}

func (s *checkpointScan) dest() []any {
	c := &s.c
	return []any{&c.Projector, &c.Cursor.XID, &c.Cursor.Position, &c.Epoch, &c.LeaderNode,
		&c.LeaderSince, &c.Status, &c.LastError, &c.EventsApplied, &c.UpdatedAt, &c.Ordering, &c.PositionFloor,
		&c.LastErrorAt, &s.halted, &s.halt.By, &s.halt.At, &s.hasEvent, &s.haltXID, &s.haltPos, &s.halt.Sink}
}

func (s *checkpointScan) result() Checkpoint {
	c := s.c
	if c.LastErrorAt.Year() <= 1970 {
		c.LastErrorAt = time.Time{}
	}
	if s.halted {
		h := s.halt
		if s.hasEvent {
			h.Event = &Cursor{XID: s.haltXID, Position: s.haltPos}
		}
		c.Halt = &h
	}
	return c
}

func scanCheckpoint(row pgx.Row, c *Checkpoint) error {
	var s checkpointScan
	if err := row.Scan(s.dest()...); err != nil {
		return err
	}
	*c = s.result()
	return nil
}

// atStartSQL is Checkpoint.AtStart for the row aliased c.
const atStartSQL = `(c.last_xid = '0' AND c.last_position = 0 AND c.position_floor = 0)`

// Claim makes node the projector's leader: it bumps the epoch, so every
// commit by an earlier leader fails from now on, and returns the cursor to
// resume from. sourceID is the source cluster's system identifier (0 when
// unknown); a checkpoint written against another cluster yields
// ErrClusterChanged. ord is the reader's ordering: a checkpoint at the start
// adopts it; any other keeps the ordering that wrote its cursor, which the
// caller must then convert (Convert) if it differs. Claim names no sink, so
// it claims a halted projector too, ending its halt (ClaimSink does not).
func (t *Target) Claim(ctx context.Context, projector, node string, sourceID int64, ord Ordering) (Checkpoint, error) {
	return t.ClaimSink(ctx, projector, node, sourceID, ord, "")
}

// ClaimSink is Claim by a replica whose sink has the fingerprint sink. A
// projector halted under the same fingerprint is not claimed: the epoch
// stays, and the error matches ErrProjectorHalted (a *HaltedError with the
// checkpoint). Under another fingerprint (the handlers were changed) the
// claim ends the halt. A halt without a record (an ordering refusal) never
// refuses a claim: the claim repeats the check that made it.
func (t *Target) ClaimSink(ctx context.Context, projector, node string, sourceID int64, ord Ordering, sink string) (Checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var s checkpointScan
	var stored *int64
	row := t.pool.QueryRow(ctx, `INSERT INTO projectord.checkpoints AS c
			(projector, epoch, leader_node, leader_since, status, system_identifier, ordering)
		VALUES ($1, 1, $2, now(), 'running', nullif($3::bigint, 0), $4)
		ON CONFLICT (projector) DO UPDATE SET
			epoch = c.epoch + 1, leader_node = excluded.leader_node, leader_since = now(),
			-- a pause outlives leaders: the new one waits too (Pause)
			status = CASE WHEN c.paused_at IS NOT NULL THEN 'paused' ELSE 'running' END, updated_at = now(),
			-- a projector at the start (new, or reset) adopts the source's cluster
			system_identifier = CASE WHEN `+atStartSQL+`
				THEN coalesce(excluded.system_identifier, c.system_identifier)
				ELSE coalesce(c.system_identifier, excluded.system_identifier) END,
			-- and the reader's ordering; a row an older binary wrote has none
			-- recorded, and its cursor tells (0/P only comes from position)
			ordering = CASE WHEN `+atStartSQL+` THEN excluded.ordering
				ELSE coalesce(c.ordering, CASE WHEN c.last_xid <> '0' THEN 'xid8' ELSE 'position' END) END,
			-- an earlier refusal to convert the ordering is this claim's to
			-- repeat (Convert) or to end; a halt this claim ends takes its
			-- message along
			last_error = CASE WHEN starts_with(coalesce(c.last_error, ''), $5) THEN NULL
				WHEN c.status = 'halted' AND c.halted_at IS NOT NULL THEN NULL ELSE c.last_error END,
			halted_by = NULL, halted_at = NULL, halted_xid = NULL, halted_position = NULL, halted_sink = NULL
		-- (coalesced: a halt recorded under no fingerprint is NULL there,
		-- and a claim naming none ends any halt)
		WHERE NOT (c.status = 'halted' AND c.halted_at IS NOT NULL AND $6 <> '' AND coalesce(c.halted_sink, '') = $6)
		RETURNING `+checkpointCols+`, system_identifier`, projector, node, sourceID, string(ord.orDefault()), ErrOrderingChanged.Error(), sink)
	err := row.Scan(append(s.dest(), &stored)...)
	if errors.Is(err, pgx.ErrNoRows) {
		c, ok, lerr := t.Load(ctx, projector)
		if lerr != nil {
			return Checkpoint{}, fmt.Errorf("error claiming checkpoint of %s: %w", projector, lerr)
		}
		if !ok || c.Halt == nil {
			// Resumed and deleted between the two statements: try again later.
			return Checkpoint{}, fmt.Errorf("error claiming checkpoint of %s: it changed during the claim", projector)
		}
		return c, &HaltedError{Checkpoint: c}
	}
	if err != nil {
		return Checkpoint{}, fmt.Errorf("error claiming checkpoint of %s: %w", projector, err)
	}
	c := s.result()
	if sourceID != 0 && stored != nil && *stored != sourceID && !c.AtStart() {
		return c, fmt.Errorf("%w: projector %s has cursor %s from cluster %d, the source is cluster %d; reset the projector (see README, Operations)",
			ErrClusterChanged, projector, c.Cursor, *stored, sourceID)
	}
	return c, nil
}

// HaltedError is a claim refused because the projector is halted under the
// claimer's own sink.
type HaltedError struct{ Checkpoint Checkpoint }

func (e *HaltedError) Error() string {
	h := e.Checkpoint.Halt
	what := "a handler that fails for every event"
	if h.Event != nil {
		what = "event " + h.Event.String()
	}
	return fmt.Sprintf("projector %s was halted by %s at %s on %s: %s; run `projectord resume %s` once the cause is fixed",
		e.Checkpoint.Projector, h.By, h.At.UTC().Format(time.RFC3339), what, e.Checkpoint.LastError, e.Checkpoint.Projector)
}

func (e *HaltedError) Unwrap() error { return ErrProjectorHalted }

// Halt records that the leader under epoch halted the projector: on event
// (nil for a handler that fails for every event alike), under the sink with
// fingerprint sink, for the reason msg. It returns ErrFenced when the epoch
// has moved: a deposed leader halts nothing.
func (t *Target) Halt(ctx context.Context, projector string, epoch int64, event *Cursor, sink, msg string) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var xid *uint64
	var pos *int64
	if event != nil {
		xid, pos = &event.XID, &event.Position
	}
	tag, err := t.pool.Exec(ctx, `UPDATE projectord.checkpoints
		SET status = 'halted', last_error = $3, last_error_at = now(), updated_at = now(),
			halted_by = coalesce(leader_node, ''), halted_at = now(), halted_xid = $4, halted_position = $5,
			halted_sink = nullif($6, '')
		WHERE projector = $1 AND epoch = $2`, projector, epoch, msg, xid, pos, sink)
	if err != nil {
		return fmt.Errorf("error recording the halt of %s: %w", projector, err)
	}
	if tag.RowsAffected() == 0 {
		return ErrFenced
	}
	return nil
}

// Resume ends a projector's halt and its pause: the next claim by any
// replica runs it again, from its checkpoint, and a paused leader goes on
// from it. It reports whether the projector was halted or paused.
// Replicas learn of it through ResumeChannel (the caller notifies) or their
// next status refresh.
func (t *Target) Resume(ctx context.Context, projector string) (was bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	// last_error is a halt's reason; a pause alone leaves it as it was.
	tag, err := t.pool.Exec(ctx, `UPDATE projectord.checkpoints
		SET status = 'running', last_error = CASE WHEN status = 'halted' THEN NULL ELSE last_error END, updated_at = now(),
			halted_by = NULL, halted_at = NULL, halted_xid = NULL, halted_position = NULL, halted_sink = NULL,
			paused_by = NULL, paused_at = NULL
		WHERE projector = $1 AND (status IN ('halted', 'paused') OR paused_at IS NOT NULL)`, projector)
	if err != nil {
		return false, fmt.Errorf("error resuming %s: %w", projector, err)
	}
	return tag.RowsAffected() > 0, nil
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
//
// With group commit on (EnableGroupCommit), the transaction may hold other
// projectors' batches too (groupcommit.go); what Commit returns is the
// same either way: a batch that fails in a group is committed alone
// before Commit answers, and the answer is that commit's.
func (t *Target) Commit(ctx context.Context, req CommitRequest, sink *SQLSink) error {
	// A row the reader could not decode is poison before any statement
	// runs: report it like a sink failure on it, sending nothing, so the
	// loop commits the events before it and applies the error policy.
	for i := range req.Events {
		if bad := req.Events[i].Bad; bad != nil {
			return &ApplyError{Index: i, Err: bad}
		}
	}
	if t.groups == nil || req.DeadLetter != nil {
		return t.commitOne(ctx, req, sink)
	}
	return t.commitGrouped(ctx, req, sink)
}

// commitOne is Commit in a transaction of req's own.
func (t *Target) commitOne(ctx context.Context, req CommitRequest, sink *SQLSink) error {
	ctx, cancel := t.bound(ctx, &req)
	defer cancel()
	b := &pgx.Batch{}
	// owner maps each queued query to the event it applies, -1 for ours.
	owner := make([]int, 0, len(req.Events)+3)
	if sink != nil {
		owner = sink.queue(b, req.Events, owner)
	}
	if dl := req.DeadLetter; dl != nil {
		queueDeadLetter(b, req.Projector, dl)
	}
	b.Queue(`SELECT projectord.advance($1, $2, $3, $4, $5, $6, $7)`,
		req.Projector, req.Epoch, req.From.XID, req.From.Position, req.To.XID, req.To.Position, int64(len(req.Events)))
	b.Queue("COMMIT")
	// Acquired apart from the batch, so a failure to get a connection (a
	// pool waiting out the deadline included) is never taken for a batch
	// that ran too long.
	conn, err := t.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w to commit a batch of %s: %w", ErrNoConnection, req.Projector, err)
	}
	defer conn.Release()
	// The transaction begins before the batch is sent, because pgx first
	// prepares statements this connection has not seen, in a round trip
	// of their own, and preparing waits for the read model's locks: so
	// the prepare, too, runs under the limits below. Within the batch's
	// deadline, the server stops a lock wait first (lock_timeout: 55P03,
	// not the event's fault, retried) and a statement that is itself slow
	// next (statement_timeout: 57014, which may be the event's fault); our
	// own deadline passing with no answer is never charged to an event.
	if _, err := conn.Exec(ctx, beginSQL(ctx)); err != nil {
		if pc := conn.Conn().PgConn(); !pc.IsClosed() && pc.TxStatus() != 'I' {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
		return fmt.Errorf("error beginning the batch of %s: %w", req.Projector, err)
	}
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
	if firstErr == nil && closeErr != nil {
		firstErr = fmt.Errorf("error committing batch of %s: %w", req.Projector, closeErr)
	}
	if firstErr != nil && ctx.Err() != nil && errors.Is(firstErr, context.DeadlineExceeded) {
		firstErr = t.probe(ctx, firstErr)
	}
	if firstErr == nil {
		t.committed(false, 1)
	}
	return firstErr
}

// probe tells a batch that outlasted its deadline because it is slow (its
// statements each within statement_timeout, but not all of them, or its
// COMMIT, within the deadline) from a server or network that stopped
// answering: the first may be the event's fault, the second never is.
func (t *Target) probe(ctx context.Context, err error) error {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(time.Second, t.timeout/4))
	defer cancel()
	if t.pool.Ping(pctx) != nil {
		return err
	}
	return fmt.Errorf("%w: %w", ErrSlowBatch, err)
}

// queueDeadLetter records dl with the values the event had in the source:
// what jsonb cannot hold goes to the raw text columns, and a field that was
// NULL in the source stays NULL.
func queueDeadLetter(b *pgx.Batch, projector string, dl *DeadLetter) {
	e := &dl.Event
	text := func(field, v string) any {
		if e.Bad.Null(field) {
			return nil
		}
		return v
	}
	var version, created, problems any
	if !e.Bad.Has("stream_version") {
		version = e.StreamVersion
	}
	if !e.Bad.Has("created_at") {
		created = e.CreatedAt
	}
	if e.Bad != nil {
		problems = e.Bad.Error()
	}
	b.Queue(`INSERT INTO projectord.dead_letters
			(projector, xid, position, stream_id, event_type, stream_version, created_at,
			 payload, metadata, payload_raw, metadata_raw, error, attempts, event_id, source_problems)
		SELECT $1::text, $2::xid8, $3::bigint, $4::text, $5::text, $6::bigint, $7::timestamptz, j.payload, j.metadata,
			CASE WHEN j.payload IS NULL THEN $8::text END, CASE WHEN j.metadata IS NULL THEN $9::text END, $10::text, $11::integer,
			nullif($12::text, ''), $13::text
		FROM (SELECT projectord.try_jsonb($8::text) AS payload, projectord.try_jsonb($9::text) AS metadata) j`,
		projector, e.XID, e.Position, text("stream_id", e.StreamID), text("event_type", e.Type), version, created,
		jsonArg(e.Data), jsonArg(e.Metadata), dl.Error, dl.Attempts, e.EventID, problems)
}

// beginSQL opens a batch's transaction with server-side limits inside the
// time ctx leaves: half of it for any one lock wait, three quarters for any
// one statement.
func beginSQL(ctx context.Context) string {
	left := 30 * time.Second
	if d, ok := ctx.Deadline(); ok {
		left = time.Until(d)
	}
	ms := max(left.Milliseconds(), 4)
	return fmt.Sprintf("BEGIN; SET LOCAL lock_timeout = %d; SET LOCAL statement_timeout = %d", ms/2, ms*3/4)
}

// classifyCommitError maps the failure of queued query i to what the loop
// needs to know: deposed, an event's own fault, a handler that fails for
// every event, or anything else.
func classifyCommitError(i int, owner []int, events []Event, sink *SQLSink, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == fencedCode {
		if pgErr.Detail == supersededDetail {
			return supersededError(pgErr)
		}
		return fmt.Errorf("%w: %s", ErrFenced, pgErr.Message)
	}
	if pgErr != nil && pgErr.Code == pausedCode {
		return fmt.Errorf("%w: %s", ErrPaused, pgErr.Message)
	}
	if i < len(owner) && owner[i] >= 0 {
		if pgErr != nil && pgErr.Code == invalidTxTermination {
			return StatementProblem{EventType: sink.handler(events[owner[i]].Type).key,
				Err: fmt.Errorf("%w (a handler runs inside the batch's transaction: the procedure or DO block it runs may not COMMIT or ROLLBACK)", err)}
		}
		// The index says where it failed, not whose fault it is: the
		// runner classifies the error (Classify).
		return &ApplyError{Index: owner[i], Err: err}
	}
	return fmt.Errorf("error committing batch: %w", err)
}

// SetStatus records a projector's status and last error, fenced by epoch so
// a deposed leader cannot overwrite its successor's state.
func (t *Target) SetStatus(ctx context.Context, projector string, epoch int64, status, lastErr string) error {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	// A pause is the operator's, not the leader's, to end; but a halt wins
	// over it, since no replica can run the projector after the resume
	// either (as Pause keeps a halted status).
	tag, err := t.pool.Exec(ctx, `UPDATE projectord.checkpoints
		SET status = CASE WHEN paused_at IS NOT NULL AND $3 <> 'halted' THEN 'paused' ELSE $3 END, last_error = nullif($4, ''),
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

// ResumeChannel carries the name of a projector that was resumed, so the
// replicas that saw it halted compete for it again at once.
const ResumeChannel = "projectord_resume"

// resetAttempts bounds how often Reset retries after PostgreSQL's deadlock
// detector chose it as the victim.
const resetAttempts = 8

// Reset rebuilds a projector from the start, in one transaction: it first
// fences the current leader (bumping the epoch locks the checkpoint row),
// then runs the sink's reset SQL (emptying the read model) and moves the
// checkpoint back to the beginning, clearing a halted status and deleting
// the projector's dead letters (the replay meets their events again). The fence
// comes first so that no batch can commit after the reset SQL has looked at
// the read model: a batch still in flight waits for the row in advance() and
// then finds the epoch moved, so it rolls back; its leader steps down, and
// whoever leads next replays every event into the emptied read model. (With
// the reset SQL first, a DELETE would keep the rows of a batch committing
// after its snapshot, and the replay would apply them again.)
//
// A reset SQL that waits for the read model's locks (TRUNCATE) can deadlock
// with such a batch: the batch holds the read model and waits for the row,
// the reset holds the row and waits for the read model. PostgreSQL aborts
// one of them; when it is the reset, Reset tries again, up to resetAttempts
// times. It returns the new epoch.
func (t *Target) Reset(ctx context.Context, projector, resetSQL string) (int64, error) {
	bo := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		epoch, err := t.resetOnce(ctx, projector, resetSQL)
		if err == nil {
			return epoch, nil
		}
		var pgErr *pgconn.PgError
		if attempt == resetAttempts || !errors.As(err, &pgErr) || pgErr.Code != "40P01" || ctx.Err() != nil {
			if attempt > 1 {
				err = fmt.Errorf("%w (attempt %d)", err, attempt)
			}
			return 0, fmt.Errorf("error resetting %s: %w", projector, err)
		}
		// Jittered, so that a leader batch retrying at the same pace does
		// not meet this reset the same way every time.
		d := bo/2 + time.Duration(rand.Int64N(int64(bo)))
		bo = min(2*bo, time.Second)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return 0, fmt.Errorf("error resetting %s: %w", projector, ctx.Err())
		}
	}
}

func (t *Target) resetOnce(ctx context.Context, projector, resetSQL string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	var epoch int64
	err := pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		// A version older than the live one is refused, as advance() refuses
		// its commits: its reset SQL was written before the promotion and may
		// reach the live model (a DELETE through an auto-updatable view).
		// FOR SHARE: a promotion cannot commit between this check and ours.
		var version, live int
		err := tx.QueryRow(ctx, `SELECT v.version, l.version FROM projectord.projector_versions v
			JOIN projectord.live_versions l ON l.name = v.name
			WHERE v.checkpoint = $1 FOR SHARE OF l`, projector).Scan(&version, &live)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		case live > version:
			name, _ := ParseVersionKey(projector)
			return fmt.Errorf("%w: version %d of %s is live, so version %d's reset SQL is not run and nothing changed; reset version %d (configure it) instead",
				ErrSuperseded, live, name, version, live)
		}
		// The fence, and the move to the start: no cursor, so no ordering
		// (the next claim records its own) and no position floor.
		err = tx.QueryRow(ctx, `UPDATE projectord.checkpoints
			SET epoch = epoch + 1, resets = resets + 1, last_xid = '0', last_position = 0, position_floor = 0, ordering = NULL,
				events_applied = 0, last_error = NULL, updated_at = now(),
				status = CASE WHEN paused_at IS NOT NULL THEN 'paused' ELSE 'running' END,
				halted_by = NULL, halted_at = NULL, halted_xid = NULL, halted_position = NULL, halted_sink = NULL
			WHERE projector = $1 RETURNING epoch`, projector).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("projector %s has no checkpoint in this database: nothing to reset", projector)
		}
		if err != nil {
			return err
		}
		// The replay meets every event again, so the old dead letters are
		// stale: kept, a retry of one would apply its event a second time.
		// Those the replay fails on again are written anew.
		if _, err := tx.Exec(ctx, `DELETE FROM projectord.dead_letters WHERE projector = $1`, projector); err != nil {
			return fmt.Errorf("error deleting the dead letters of %s: %w", projector, err)
		}
		if resetSQL != "" {
			if _, err := tx.Exec(ctx, resetSQL); err != nil {
				return fmt.Errorf("reset SQL failed: %w", err)
			}
		}
		// An idle leader commits nothing that could be fenced: tell it.
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, ResetChannel, projector)
		return err
	})
	return epoch, err
}
