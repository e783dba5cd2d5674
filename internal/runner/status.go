package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/projectord/projectord/internal/store"
)

// ProjectorStatus is one projector as /status and `projectord status` show it.
type ProjectorStatus struct {
	Name string `json:"name"`
	// State is this replica's supervisor state ("" outside a daemon).
	State State `json:"state,omitempty"`
	// Status is the state recorded in the checkpoint row (running, halted, ...).
	Status        string     `json:"status"`
	LeaderNode    string     `json:"leader_node,omitempty"`
	LeaderSince   *time.Time `json:"leader_since,omitempty"`
	Epoch         int64      `json:"epoch"`
	XID           uint64     `json:"xid"`
	Position      int64      `json:"position"`
	Head          int64      `json:"head"`
	LagEvents     int64      `json:"lag_events"`
	LagSeconds    float64    `json:"lag_seconds"`
	EventsApplied int64      `json:"events_applied"`
	LastError     string     `json:"last_error,omitempty"`
	// LastErrorSummary is LastError without its text (errsummary.go).
	LastErrorSummary *ErrorSummary `json:"last_error_summary,omitempty"`
	UpdatedAt        *time.Time    `json:"updated_at,omitempty"`
}

// Snapshot is the state of every projector and of the source at one moment.
type Snapshot struct {
	TakenAt time.Time `json:"taken_at"`
	Node    string    `json:"node,omitempty"`
	Ready   bool      `json:"ready"`
	// Head is the newest committed event; lag is measured against it.
	HeadXID uint64 `json:"head_xid"`
	Head    int64  `json:"head"`
	// ReadableHead is the newest event below the xmin horizon, as far as
	// projectors can read now; it trails Head while a transaction holds
	// the horizon back.
	ReadableHead int64             `json:"readable_head"`
	Horizon      HorizonStatus     `json:"horizon"`
	Projectors   []ProjectorStatus `json:"projectors"`
	Error        string            `json:"error,omitempty"`
	// ErrorSummary is Error without its text (Public sets it).
	ErrorSummary *ErrorSummary `json:"error_summary,omitempty"`
}

// HorizonStatus names what holds the xmin horizon back.
type HorizonStatus struct {
	AgeSeconds float64 `json:"age_seconds"`
	PID        int     `json:"pid,omitempty"`
	Prepared   string  `json:"prepared_xact,omitempty"`
}

// StatusTarget pairs a projector with where its checkpoint lives.
type StatusTarget struct {
	Projector Projector
	Target    *store.Target
}

// CollectStatus reads every projector's checkpoint (one query per target
// database) and measures lag only for those behind head (the newest
// committed event), so caught-up projectors cost nothing.
func CollectStatus(ctx context.Context, reader *store.Reader, head store.Cursor, ps []StatusTarget) ([]ProjectorStatus, error) {
	lists := map[*store.Target]map[string]store.Checkpoint{}
	out := make([]ProjectorStatus, 0, len(ps))
	now := time.Now()
	for _, p := range ps {
		cps, ok := lists[p.Target]
		if !ok {
			all, err := p.Target.List(ctx)
			if err != nil {
				return nil, err
			}
			cps = make(map[string]store.Checkpoint, len(all))
			for _, c := range all {
				cps[c.Projector] = c
			}
			lists[p.Target] = cps
		}
		st := ProjectorStatus{Name: p.Projector.Name, Status: "new", Head: head.Position}
		var cursor store.Cursor
		filter := p.Projector.Filter
		if c, ok := cps[p.Projector.Name]; ok {
			st.Status, st.LeaderNode, st.Epoch = c.Status, c.LeaderNode, c.Epoch
			st.XID, st.Position, st.EventsApplied, st.LastError = c.Cursor.XID, c.Cursor.Position, c.EventsApplied, c.LastError
			st.LastErrorSummary = SummarizeLastError(c.LastError)
			if c.LeaderSince.Year() > 1970 {
				since := c.LeaderSince
				st.LeaderSince = &since
			}
			updated := c.UpdatedAt
			st.UpdatedAt = &updated
			cursor, filter.PositionFloor = c.Cursor, c.PositionFloor
		}
		if cursor.Less(head) {
			n, oldest, err := reader.Lag(ctx, cursor, filter)
			if err != nil {
				return nil, fmt.Errorf("projector %s: %w", p.Projector.Name, err)
			}
			st.LagEvents = n
			if n > 0 && !oldest.IsZero() {
				st.LagSeconds = max(0, now.Sub(oldest).Seconds())
			}
		}
		out = append(out, st)
	}
	return out, nil
}
