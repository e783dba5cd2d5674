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
	// ErrNoXID8 means the source table lacks a usable xid8 transaction column.
	ErrNoXID8 = errors.New("source table has no xid8 transaction_id column: run `projectord source prepare` (or set source.ordering: position to accept skipped events)")
	// ErrSchemaTooNew means the database was migrated by a newer projectord.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
	// ErrClusterChanged means the checkpoint was written on another PostgreSQL
	// cluster (a dump/restore resets xids), so its cursor is meaningless here.
	ErrClusterChanged = errors.New("checkpoint belongs to another PostgreSQL cluster (system_identifier changed)")
	// ErrOrderingChanged means a checkpoint was written under another
	// source.ordering and its cursor cannot be converted exactly: resuming
	// would replay or skip events.
	ErrOrderingChanged = errors.New("checkpoint was written under another source.ordering and cannot be converted exactly")
)

// IsEventError reports whether err is the event's own fault: a data error
// (class 22), a constraint violation (class 23) or an exception raised by
// the handler's own code (P0001). Only these count against the event and
// can end in skip or dead_letter. Anything else (a read-only or missing
// table, a permission problem, a server in trouble) would fail for every
// event alike, so it is retried, never blamed on an event.
func IsEventError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch {
	case strings.HasPrefix(pgErr.Code, "22"), strings.HasPrefix(pgErr.Code, "23"), pgErr.Code == "P0001":
		return true
	}
	return false
}

// IsTransient reports whether err is worth retrying without counting it
// against an event: lost connections, serialization failures, deadlocks,
// server shutdowns and overload.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", // serialization failure, deadlock
			"57P01", "57P02", "57P03", // admin shutdown, crash shutdown, cannot connect now
			"53000", "53100", "53200", "53300", "53400", // insufficient resources
			"55P03", // lock not available
			"57014": // query canceled (statement timeout)
			return true
		}
		return len(pgErr.Code) >= 2 && pgErr.Code[:2] == "08"
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err)
}
