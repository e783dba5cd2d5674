package store

import (
	"fmt"
	"time"
)

// Cursor is a position in the event log: the writing transaction's xid8 and
// the event's position. Ordering by the pair, and reading only below the
// xmin horizon, is what makes reads gap-safe (DESIGN.md rule 1).
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
	Data          []byte // raw JSON
	Metadata      []byte // raw JSON, may be nil
	CreatedAt     time.Time
	EventID       string // empty when the source has no event id column
}

// Filter narrows the events a projector reads. The zero value reads everything.
type Filter struct {
	EventTypes   []string
	StreamPrefix string
	// PositionFloor excludes every event at or below it: the checkpoint
	// counts them done whatever their xid (it was converted from position
	// ordering). Set from the claimed checkpoint, never from configuration.
	PositionFloor int64
}

// Matches reports whether e passes f; used by the in-memory reader.
func (f Filter) Matches(e *Event) bool {
	if f.PositionFloor > 0 && e.Position <= f.PositionFloor {
		return false
	}
	if f.StreamPrefix != "" && (len(e.StreamID) < len(f.StreamPrefix) || e.StreamID[:len(f.StreamPrefix)] != f.StreamPrefix) {
		return false
	}
	if len(f.EventTypes) == 0 {
		return true
	}
	for _, t := range f.EventTypes {
		if t == e.Type {
			return true
		}
	}
	return false
}
