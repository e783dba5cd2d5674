package store

import (
	"fmt"
	"strings"
	"time"
)

// Cursor is a position in the event log: the writing transaction's xid8 and
// the event's position. Ordering by the pair, and reading only below the
// xmin horizon, is what makes reads gap-safe (docs/architecture.md, rule 1).
type Cursor struct {
	XID      uint64
	Position int64
}

// Less reports whether c sorts before o.
func (c Cursor) Less(o Cursor) bool {
	if c.XID != o.XID {
		return c.XID < o.XID
	}
	return c.Position < o.Position
}

// IsZero reports whether c is the start of the log.
func (c Cursor) IsZero() bool { return c == Cursor{} }

func (c Cursor) String() string { return fmt.Sprintf("%d/%d", c.XID, c.Position) }

// Event is one row of the source table.
type Event struct {
	Cursor
	StreamID      string
	StreamVersion int64
	Type          string
	Data          []byte // raw JSON; for a bad row, the source text as read
	Metadata      []byte // raw JSON, may be nil; for a bad row, the source text
	CreatedAt     time.Time
	EventID       string // empty when the source has no event id column
	// Bad is set when the row could not be decoded into an event (a NULL
	// where an event needs a value, data that is not JSON, ...). Such an
	// event is poison: it never reaches a sink statement, and the
	// projector's error policy decides what happens to it.
	Bad *BadRowError
}

// BadRowError is a source row the reader could not decode. It names every
// problem column; the event carries what could be read.
type BadRowError struct {
	Problems []ColumnProblem
}

// ColumnProblem is one undecodable value: the event field, the source
// column it is mapped to, and what is wrong with the value.
type ColumnProblem struct {
	Field, Column string
	Null          bool   // the value is NULL
	Problem       string // e.g. "is NULL", "is not valid JSON"
}

func (e *BadRowError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = fmt.Sprintf("column %q (%s) %s", p.Column, p.Field, p.Problem)
	}
	return "bad source row: " + strings.Join(parts, "; ")
}

// Null reports whether the row's value for field was NULL.
func (e *BadRowError) Null(field string) bool {
	p := e.problem(field)
	return p != nil && p.Null
}

// Has reports whether field is one of the row's problems.
func (e *BadRowError) Has(field string) bool { return e.problem(field) != nil }

func (e *BadRowError) problem(field string) *ColumnProblem {
	if e == nil {
		return nil
	}
	for i := range e.Problems {
		if e.Problems[i].Field == field {
			return &e.Problems[i]
		}
	}
	return nil
}

// TypeNull reports whether the event's type was NULL in the source.
func (e *Event) TypeNull() bool { return e.Bad.Null("event_type") }

// Filter narrows the events a projector reads. The zero value reads everything.
type Filter struct {
	EventTypes []string
	// TypeNull makes EventTypes also match a row whose type is NULL (which
	// a type list never matches otherwise): for measuring the lag of a
	// projector that reads every type, and so meets such rows.
	TypeNull     bool
	StreamPrefix string
	// PositionFloor excludes every event at or below it: the checkpoint
	// counts them done whatever their xid (it was converted from position
	// ordering). Set from the claimed checkpoint, never from configuration.
	PositionFloor int64
}

// Matches reports whether e passes f; used by the in-memory reader. Like
// SQL, a NULL stream id or type matches no prefix or type list.
func (f Filter) Matches(e *Event) bool {
	if f.PositionFloor > 0 && e.Position <= f.PositionFloor {
		return false
	}
	if f.StreamPrefix != "" && (e.Bad.Null("stream_id") || len(e.StreamID) < len(f.StreamPrefix) || e.StreamID[:len(f.StreamPrefix)] != f.StreamPrefix) {
		return false
	}
	if len(f.EventTypes) == 0 {
		return true
	}
	if e.TypeNull() {
		return f.TypeNull
	}
	for _, t := range f.EventTypes {
		if t == e.Type {
			return true
		}
	}
	return false
}
