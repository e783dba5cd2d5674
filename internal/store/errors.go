package store

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrFenced means the checkpoint's epoch or cursor moved under us: another
	// leader took over. The transaction was rolled back; step down.
	ErrFenced = errors.New("checkpoint fenced: another leader holds this projector")
	// ErrPaused means an operator paused the projector (Target.Pause): its
	// batch was refused, whole, and nothing of it committed. Not a
	// failure: the leader waits, holding its lock, until Resume.
	ErrPaused = errors.New("projector paused")
	// ErrProjectorHalted means a claim was refused: the projector is halted
	// under the claimer's own sink (see HaltedError).
	ErrProjectorHalted = errors.New("projector halted")
	// ErrUnsupportedSource means the source table is a layout of its
	// store that its preset cannot read correctly.
	ErrUnsupportedSource = errors.New("unsupported source layout")
	// ErrNoXID8 means the source table lacks a usable xid8 transaction column.
	ErrNoXID8 = errors.New("source table has no xid8 transaction_id column: run `projectord source prepare` (or set source.ordering: position to accept skipped events)")
	// ErrSchemaTooNew means the database was migrated by a newer projectord.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
	// ErrUntrustedSchema means schema projectord, or an object in it, is
	// owned by a role projectord does not run as: its functions would run
	// another role's code with projectord's privileges.
	ErrUntrustedSchema = errors.New("untrusted schema projectord")
	// ErrClusterChanged means the checkpoint was written on another PostgreSQL
	// cluster (a dump/restore resets xids), so its cursor is meaningless here.
	ErrClusterChanged = errors.New("checkpoint belongs to another PostgreSQL cluster (system_identifier changed)")
	// ErrOrderingChanged means a checkpoint was written under another
	// source.ordering and its cursor cannot be converted exactly: resuming
	// would replay or skip events.
	ErrOrderingChanged = errors.New("checkpoint was written under another source.ordering and cannot be converted exactly")
	// ErrSlowBatch marks a batch that ran out of its deadline while the
	// server went on answering (a probe on another connection got through
	// at once): the batch was slow in itself, not the server or network.
	ErrSlowBatch = errors.New("the batch outlasted its deadline while the server answered")
	// ErrNoConnection means no connection could be had for a commit: nothing
	// was sent, so nothing about the batch can be learnt from it.
	ErrNoConnection = errors.New("no database connection")
)

// ErrorClass says whose fault an error is, which decides how the runner
// retries it and whether it counts against an event.
type ErrorClass int

const (
	// ClassUnknown is a PostgreSQL error the table below does not place.
	// It counts against the event like ClassEvent, so after max_attempts
	// it reaches the error policy: nothing unplaced is retried forever.
	ClassUnknown ErrorClass = iota
	// ClassTransient passes by itself (lost connection, serialization
	// failure, deadlock, shutdown, overload, lock not available): retried
	// with backoff, never counted against an event.
	ClassTransient
	// ClassDatabase is the database's or the configuration's fault and
	// would fail for every event alike (a missing table or privilege, a
	// read-only server, an unsupported feature): retried with backoff,
	// never counted against an event, and reported while it lasts.
	ClassDatabase
	// ClassTimeout is a statement or commit that ran out of time. A batch
	// that times out is split to find the slow event; a single event that
	// keeps timing out counts against itself.
	ClassTimeout
	// ClassEvent is the event's own fault: its data breaks a type, a
	// constraint, a cardinality or limit, an assertion or a policy of the
	// read model. It counts against the event.
	ClassEvent
	// ClassNoAnswer is our own deadline passing with no answer from the
	// server: the network or the server stalled, or a batch as a whole
	// needs longer than its deadline. It never counts against an event (a
	// statement that is itself too slow is stopped by the server first,
	// with statement_timeout, and is ClassTimeout); a batch that meets it
	// is split, a single event retried.
	ClassNoAnswer
)

func (c ErrorClass) String() string {
	switch c {
	case ClassTransient:
		return "transient"
	case ClassDatabase:
		return "database"
	case ClassTimeout:
		return "timeout"
	case ClassEvent:
		return "event"
	case ClassNoAnswer:
		return "no answer"
	default:
		return "unknown"
	}
}

// CountsAgainstEvent reports whether errors of class c are charged to the
// event they occurred on, and so can end in the error policy.
func (c ErrorClass) CountsAgainstEvent() bool {
	return c == ClassEvent || c == ClassUnknown || c == ClassTimeout
}

// sqlstates maps SQLSTATE codes (exact) and classes (two characters) to
// error classes; an exact code wins over its class. Codes absent from
// both are ClassUnknown. See the PostgreSQL manual, appendix A.
var sqlstates = map[string]ErrorClass{
	"08":    ClassTransient, // connection exception
	"0A":    ClassDatabase,  // feature not supported
	"0B":    ClassDatabase,  // invalid transaction initiation
	"0L":    ClassDatabase,  // invalid grantor
	"0P":    ClassDatabase,  // invalid role specification
	"20":    ClassEvent,     // case not found (PL/pgSQL CASE without a branch for this value)
	"21":    ClassEvent,     // cardinality violation: a subquery returned more than one row
	"22":    ClassEvent,     // data exception
	"23":    ClassEvent,     // integrity constraint violation, immediate or deferred
	"24":    ClassDatabase,  // invalid cursor state
	"25":    ClassDatabase,  // invalid transaction state, e.g. 25006 read-only transaction
	"26":    ClassDatabase,  // invalid SQL statement name
	"27":    ClassEvent,     // triggered data change violation
	"28":    ClassDatabase,  // invalid authorization specification
	"2B":    ClassDatabase,  // dependent privilege descriptors still exist
	"2D":    ClassDatabase,  // invalid transaction termination
	"2F":    ClassEvent,     // SQL routine exception, raised by a function for this input
	"34":    ClassDatabase,  // invalid cursor name
	"38":    ClassEvent,     // external routine exception
	"39":    ClassEvent,     // external routine invocation exception
	"3B":    ClassDatabase,  // savepoint exception
	"3D":    ClassDatabase,  // invalid catalog name
	"3F":    ClassDatabase,  // invalid schema name
	"40":    ClassTransient, // transaction rollback: serialization failure, deadlock
	"40002": ClassEvent,     // transaction integrity constraint violation
	"42":    ClassDatabase,  // syntax error or access rule violation (42501 RLS: see Classify)
	"44":    ClassEvent,     // WITH CHECK OPTION violation
	"53":    ClassTransient, // insufficient resources
	"54":    ClassEvent,     // program limit exceeded, e.g. 54000 index row too large
	"55":    ClassDatabase,  // object not in prerequisite state (55000, 55006 object in use)
	"55P03": ClassTransient, // lock not available
	"57":    ClassTransient, // operator intervention: shutdowns, cannot connect now
	"57014": ClassTimeout,   // query canceled: statement timeout (a cancel by hand: see classifyCode)
	"57P04": ClassDatabase,  // database dropped
	"58":    ClassDatabase,  // system error (I/O, missing file)
	"72":    ClassTransient, // snapshot too old
	"F0":    ClassDatabase,  // configuration file error
	"P0":    ClassEvent,     // PL/pgSQL: RAISE (P0001), STRICT no/too many rows (P0002/3), ASSERT (P0004)
	"XX001": ClassDatabase,  // data corrupted
	"XX002": ClassDatabase,  // index corrupted
}

// rlsViolation is the start of PostgreSQL's message for a row that a
// row-level security policy rejects (42501, like a missing privilege).
// The match needs English server messages (lc_messages); in another
// language the violation counts as a missing privilege and is retried.
const rlsViolation = "new row violates row-level security policy"

// Classify says whose fault err is. A PostgreSQL error is classified by its
// SQLSTATE; an error wrapped in *ApplyError that is not one (say, an event
// the sink could not encode) is the event's; any other error that names no
// event (a client-side problem) is retried as the database's.
func Classify(err error) ErrorClass {
	if err == nil {
		return ClassUnknown
	}
	if errors.Is(err, ErrNoConnection) {
		return ClassTransient
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return classifyCode(pgErr)
	}
	if errors.Is(err, ErrSlowBatch) {
		return ClassTimeout
	}
	// Our own deadline, with no answer from the server.
	if errors.Is(err, context.DeadlineExceeded) {
		return ClassNoAnswer
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return ClassTransient
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return ClassTransient
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return ClassTransient
	}
	// A failure a sink reports for one event that is not PostgreSQL's (a
	// row the reader could not decode, an in-memory sink's error) is the
	// event's. (A handler pgx would bind wrongly for every event is
	// refused by the start-up check instead: SQLSink.Check.)
	var applyErr *ApplyError
	if errors.As(err, &applyErr) {
		return ClassEvent
	}
	return ClassDatabase
}

func classifyCode(e *pgconn.PgError) ErrorClass {
	if e.Code == "42501" && strings.HasPrefix(e.Message, rlsViolation) {
		return ClassEvent
	}
	if e.Code == "57014" && !strings.Contains(e.Message, "statement timeout") {
		// Cancelled by someone (pg_cancel_backend), not by our
		// statement_timeout: nothing to do with the event. (A server
		// speaking another language lands here too: the safe side.)
		return ClassTransient
	}
	if c, ok := sqlstates[e.Code]; ok {
		return c
	}
	if len(e.Code) >= 2 {
		if c, ok := sqlstates[e.Code[:2]]; ok {
			return c
		}
	}
	return ClassUnknown
}
