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
	// Versions lists every version of the projectors in this replica's
	// target databases (versions.go).
	Versions []VersionStatus `json:"versions,omitempty"`
	// Balance is how the live replicas share the projectors, as this
	// replica's coordination session last read it; nil while it has no
	// fresh view.
	Balance *BalanceStatus `json:"balance,omitempty"`
	// Stale is set when this replica could not refresh from the database
	// recently (Daemon.View): everything read from it is then left out,
	// and RefreshedAt says when it last could.
	Stale       bool       `json:"stale,omitempty"`
	RefreshedAt *time.Time `json:"refreshed_at,omitempty"`
	Error       string     `json:"error,omitempty"`
	// ErrorSummary is Error without its text (Public sets it).
	ErrorSummary *ErrorSummary `json:"error_summary,omitempty"`
}

// BalanceStatus is how the live replicas share the projectors.
type BalanceStatus struct {
	// Enabled is coordination.balance.
	Enabled bool `json:"enabled"`
	// ViewAt is when the coordination session read the view.
	ViewAt time.Time `json:"view_at"`
	// TotalWeight is the weight shared: every projector's that is not halted.
	TotalWeight int `json:"total_weight"`
	// HandOvers is how many leaderships this replica has handed over to
	// balance the shares since it started.
	HandOvers int64 `json:"hand_overs"`
	// Nodes are the live replicas, by node id.
	Nodes []NodeShare `json:"nodes"`
}

// NodeShare is one live replica's share.
type NodeShare struct {
	Node string `json:"node"`
	// Leads are the projectors whose lock its session holds; Weight is
	// their weight.
	Leads  []string `json:"leads"`
	Weight int      `json:"weight"`
	// Target is the weight it should lead, when balancing is on.
	Target *int `json:"target,omitempty"`
}

// HorizonStatus names what holds the xmin horizon back.
type HorizonStatus struct {
	AgeSeconds float64 `json:"age_seconds"`
	PID        int     `json:"pid,omitempty"`
	Prepared   string  `json:"prepared_xact,omitempty"`
}

// Check is one named health check's outcome.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// StatusTarget pairs a projector with where its checkpoint lives.
type StatusTarget struct {
	Projector Projector
	Target    *store.Target
	// NoLag is set when the projector's sink acts on none of the event
	// types its filter lets through: it can have no lag.
	NoLag bool
}

// HandledFilter narrows a projector's filter, for measuring lag, to the
// event types its sink acts on (types, or every type when all), so lag
// counts the events events_processed_total counts: those a handler runs
// for. Events the sink has no handler for are passed over, like filtered-
// out ones, and are never anyone's lag. A row whose type is NULL is lag
// when the projector reads every type: the loop keeps it, and it poisons
// (a type list never matches it, so a projector with event_types never
// reads it). ok is false when no event type is left: the projector can
// have no lag.
func HandledFilter(f store.Filter, types []string, all bool) (_ store.Filter, ok bool) {
	if all {
		return f, true
	}
	if len(f.EventTypes) == 0 {
		f.EventTypes, f.TypeNull = types, true
		return f, len(types) > 0
	}
	var both []string
	for _, t := range f.EventTypes {
		for _, h := range types {
			if t == h {
				both = append(both, t)
				break
			}
		}
	}
	f.EventTypes = both
	return f, len(both) > 0
}

// StatusTargetOf is the StatusTarget of a projector whose sink acts on the
// event types types (every type when all).
func StatusTargetOf(p Projector, t *store.Target, types []string, all bool) StatusTarget {
	f, ok := HandledFilter(p.Filter, types, all)
	p.Filter = f
	return StatusTarget{Projector: p, Target: t, NoLag: !ok}
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
		if cursor.Less(head) && !p.NoLag {
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
