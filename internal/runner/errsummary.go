package runner

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strconv"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrorSummary is what may be said about an error where the full text must
// not go: its kind, SQLSTATE and the failing event's cursor. Error texts
// carry producer data (stream ids, values quoted by PostgreSQL, such as a
// card number that failed a cast) and connection details (user, database),
// so unauthenticated HTTP shows only this; the full text is in the logs and
// in `projectord status`, which need database access anyway.
type ErrorSummary struct {
	// Kind is "poison" (an event failed every attempt), "refresh" (the
	// status snapshot could not be read) or "error" (anything else).
	Kind string `json:"kind"`
	// Then is what the policy did with a poison event: halt, skip or dead_letter.
	Then string `json:"then,omitempty"`
	// SQLState is PostgreSQL's error code, when the error came from it.
	SQLState string `json:"sqlstate,omitempty"`
	// XID and Position are the poison event's cursor.
	XID      uint64 `json:"xid,omitempty"`
	Position int64  `json:"position,omitempty"`
}

var (
	// poisonPrefix matches the start of the last_error the loop records for a
	// poison event (run.go, poison): only projectord's own words and the
	// numeric cursor come before the first producer-written field.
	poisonPrefix = regexp.MustCompile(`^(skipped |dead-lettered )?event (\d+)/(\d+) `)
	// trailingSQLState matches pgconn.PgError's suffix. The poison message
	// ends with the PostgreSQL error, so anything producer-written inside it
	// comes before this and cannot forge it.
	trailingSQLState = regexp.MustCompile(`\(SQLSTATE ([0-9A-Z]{5})\)$`)
)

// SummarizeLastError summarises a checkpoint's last_error without any of
// its text. It returns nil for "".
func SummarizeLastError(msg string) *ErrorSummary {
	if msg == "" {
		return nil
	}
	s := &ErrorSummary{Kind: "error"}
	if m := poisonPrefix.FindStringSubmatch(msg); m != nil {
		s.Kind, s.Then = "poison", "halt"
		switch m[1] {
		case "skipped ":
			s.Then = "skip"
		case "dead-lettered ":
			s.Then = "dead_letter"
		}
		s.XID, _ = strconv.ParseUint(m[2], 10, 64)
		s.Position, _ = strconv.ParseInt(m[3], 10, 64)
	}
	if m := trailingSQLState.FindStringSubmatch(msg); m != nil {
		s.SQLState = m[1]
	}
	return s
}

// errorClass names err without its text: "SQLSTATE 3D000", "timeout",
// "connection refused", or "" when nothing safe is known.
func errorClass(err error) string {
	var pgErr *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.As(err, &pgErr):
		return "SQLSTATE " + pgErr.Code
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	}
	return ""
}

// Public returns s for unauthenticated HTTP (/status): every error text
// replaced by its ErrorSummary, a prepared transaction's name by
// "(redacted)". Names, nodes, cursors and lag stay.
func (s Snapshot) Public() Snapshot {
	ps := make([]ProjectorStatus, len(s.Projectors))
	for i, p := range s.Projectors {
		if p.LastError != "" && p.LastErrorSummary == nil {
			p.LastErrorSummary = SummarizeLastError(p.LastError)
		}
		p.LastError = ""
		ps[i] = p
	}
	s.Projectors = ps
	if s.Error != "" {
		s.ErrorSummary = &ErrorSummary{Kind: "refresh"}
		if m := trailingSQLState.FindStringSubmatch(s.Error); m != nil {
			s.ErrorSummary.SQLState = m[1]
		}
	}
	s.Error = ""
	// A prepared transaction's name is whatever its client chose (XA
	// managers put business identifiers in it): only that one holds the
	// horizon goes out. The name is in `projectord status`.
	if s.Horizon.Prepared != "" {
		s.Horizon.Prepared = "(redacted)"
	}
	return s
}

// withClass appends err's class to detail, when it has one.
func withClass(detail string, err error) string {
	if c := errorClass(err); c != "" {
		return detail + " (" + c + ")"
	}
	return detail
}

// WithClass appends err's class (a SQLSTATE, or the kind of network error)
// to detail, when it has one: what readiness may say of an error without
// its text.
func WithClass(detail string, err error) string { return withClass(detail, err) }
