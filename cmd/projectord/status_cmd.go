package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/balance"
	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/daemon"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

func newStatusCmd(e *env, g *globalFlags) *cobra.Command {
	var output string
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every projector's leader, state, cursor and lag, and every node, read from the database",
		Long: `Read the databases (from any host; no daemon needed) and print, for every
configured projector: the node that holds its lock now and that node's
heartbeat age, its checkpoint cursor (xid/position), the source head, lag in
events and in seconds (age of the oldest unprocessed event), its state
(running, unresponsive, no leader, halted, paused, new, superseded) and last error
with its age; every version of a projector rebuilt under a new version;
who halted a halted projector, when, and on which event; every node with
its heartbeat, what it leads (count and weight) and, with
coordination.balance, its target share; and what holds the xmin horizon
back, if it has for 1s or more.`,
		Example: "  projectord status --config /etc/projectord/projectord.yaml\n  projectord status -o json\n  projectord status --watch --interval 5s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return &usageError{msg: fmt.Sprintf("--output must be table or json, not %q", output)}
			}
			if watch && interval <= 0 {
				return &usageError{msg: fmt.Sprintf("--interval must be positive, not %s", interval)}
			}
			cfg, err := loadConfig(cmd, g)
			if err != nil {
				return err
			}
			pools := map[string]*pgxpool.Pool{}
			defer func() {
				for _, p := range pools {
					p.Close()
				}
			}()
			for {
				doc, err := readStatus(cmd.Context(), cfg, pools)
				if err != nil {
					return err
				}
				if output == "json" {
					out, err := json.MarshalIndent(doc, "", "  ")
					if err != nil {
						return err
					}
					if _, err := e.stdout.Write(append(jsonASCIIControls(out), '\n')); err != nil {
						return err
					}
				} else {
					if watch {
						fmt.Fprint(e.stdout, "\033[H\033[2J")
					}
					printHeader(e.stdout, doc.TakenAt, watch, interval)
					printStatus(e.stdout, doc)
				}
				if !watch {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh interval with --watch")
	return cmd
}

// Projector states, as `projectord status` derives them from the database
// (README, "projectord status").
const (
	// stateHalted: the checkpoint records the projector halted. No replica
	// runs it until it is resumed or claimed by a replica whose handlers
	// changed.
	stateHalted = "halted"
	// statePaused: an operator paused it (projectord pause). Its leader
	// holds the lock and applies nothing until projectord resume.
	statePaused = "paused"
	// stateRunning: a node holds its lock and heartbeated within
	// coordination.lease_timeout.
	stateRunning = "running"
	// stateUnresponsive: a session holds its lock, but its node has not
	// heartbeated for lease_timeout (a standby will take over), or no node
	// row matches the session.
	stateUnresponsive = "unresponsive"
	// stateNoLeader: it has a checkpoint and nobody holds its lock.
	stateNoLeader = "no leader"
	// stateNew: no checkpoint yet and nobody holds its lock.
	stateNew = "new"
)

// Node states.
const (
	nodeAlive = "alive" // heartbeated within lease_timeout
	nodeDead  = "dead"  // silent past lease_timeout
)

// horizonThreshold is how long the oldest transaction must have been open
// before the table names it: under any write load some transaction holds an
// xid at every moment, for milliseconds, and that holds nothing back that
// matters. The JSON output always carries the holder.
const horizonThreshold = time.Second

// statusDoc is the output of `projectord status -o json` (README,
// "projectord status"). Times are RFC 3339; ages are seconds.
type statusDoc struct {
	TakenAt time.Time `json:"taken_at"`
	// Ordering is the source's ordering: cursors are (xid, position) pairs
	// ordered by xid first under xid8, positions under position.
	Ordering            string  `json:"ordering"`
	LeaseTimeoutSeconds float64 `json:"lease_timeout_seconds"`
	// Head is the newest committed event; ReadableHead the newest one below
	// the xmin horizon. Null for an empty table.
	Head         *cursorDoc     `json:"head"`
	ReadableHead *cursorDoc     `json:"readable_head"`
	Projectors   []projectorDoc `json:"projectors"`
	Nodes        []nodeDoc      `json:"nodes"`
	// Horizon is the oldest transaction holding an xid, whatever its age;
	// null when none does.
	Horizon *horizonDoc `json:"horizon"`
	// Balance is coordination.balance; TotalWeight the weight the live
	// replicas share (every configured projector's, halted ones left out).
	Balance     bool `json:"balance"`
	TotalWeight int  `json:"total_weight"`
	// Versions lists every version of every projector recorded in the
	// target databases (README, "Rebuild without downtime").
	Versions []versionDoc `json:"versions"`
}

type cursorDoc struct {
	XID      uint64 `json:"xid"`
	Position int64  `json:"position"`
}

type projectorDoc struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Leader is the session holding the projector's lock now; null when
	// nobody holds it.
	Leader *leaderDoc `json:"leader"`
	// RecordedStatus is the checkpoint's status column; null without a
	// checkpoint.
	RecordedStatus *string `json:"recorded_status"`
	// Checkpoint is null before the first claim.
	Checkpoint    *checkpointDoc `json:"checkpoint"`
	LagEvents     int64          `json:"lag_events"`
	LagSeconds    float64        `json:"lag_seconds"`
	EventsApplied int64          `json:"events_applied"`
	LastError     *string        `json:"last_error"`
	// LastErrorAt is when LastError was written; null if unknown (written
	// by a binary older than the halt record) or no error.
	LastErrorAt *time.Time `json:"last_error_at"`
	Halt        *haltDoc   `json:"halt"`
	// Pause says who paused it and when; null unless paused.
	Pause *pauseDoc `json:"pause"`
}

type pauseDoc struct {
	By         string    `json:"by"`
	At         time.Time `json:"at"`
	AgeSeconds float64   `json:"age_seconds"`
}

type leaderDoc struct {
	// Node is "" when no node row matches the holding session.
	Node string `json:"node"`
	PID  int32  `json:"pid"`
	// Since is when this node claimed the checkpoint; null while the
	// checkpoint still names another node (it has not claimed yet).
	Since               *time.Time `json:"since"`
	HeartbeatAt         *time.Time `json:"heartbeat_at"`
	HeartbeatAgeSeconds *float64   `json:"heartbeat_age_seconds"`
}

type checkpointDoc struct {
	// Cursor: every event up to it, in the ordering's order, is done.
	// Under xid8 an event with a lower position but a later xid may still be
	// ahead of it.
	Cursor        cursorDoc `json:"cursor"`
	Ordering      string    `json:"ordering"`
	PositionFloor int64     `json:"position_floor"`
	Epoch         int64     `json:"epoch"`
	// LeaderNode and LeaderSince record the last claim: who claimed it last,
	// not who leads now (Leader says that).
	LeaderNode  string     `json:"leader_node"`
	LeaderSince *time.Time `json:"leader_since"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

type haltDoc struct {
	By         string    `json:"by"`
	At         time.Time `json:"at"`
	AgeSeconds float64   `json:"age_seconds"`
	// Event is the event it halted on; null for a handler that fails for
	// every event alike.
	Event *cursorDoc `json:"event"`
}

type nodeDoc struct {
	NodeID              string    `json:"node_id"`
	Hostname            string    `json:"hostname"`
	Version             string    `json:"version"`
	BackendPID          int32     `json:"backend_pid"`
	StartedAt           time.Time `json:"started_at"`
	HeartbeatAt         time.Time `json:"heartbeat_at"`
	HeartbeatAgeSeconds float64   `json:"heartbeat_age_seconds"`
	State               string    `json:"state"`
	// SessionAlive: its coordination session is connected. A node alive
	// by its heartbeat whose session is gone (killed) no longer counts
	// for balancing.
	SessionAlive bool `json:"session_alive"`
	// Leads names the configured projectors whose lock its session holds;
	// LedWeight is their total weight.
	Leads     []string `json:"leads"`
	LedWeight int      `json:"led_weight"`
	// TargetWeight is the weight it should lead with coordination.balance
	// on, computed as the replicas do (balance.Targets) from the live
	// nodes and what they lead; null for a node that does not count (dead,
	// session gone) or with balancing off.
	TargetWeight *int `json:"target_weight"`
}

type horizonDoc struct {
	AgeSeconds      float64 `json:"age_seconds"`
	PID             int     `json:"pid"`
	Prepared        string  `json:"prepared_xact,omitempty"`
	ApplicationName string  `json:"application_name"`
	// Own is true when the holder is a connection of a projectord node
	// (Node): its pool (Connection "pool": a batch, most often) or its
	// coordination session ("coordination").
	Own        bool   `json:"own"`
	Node       string `json:"node,omitempty"`
	Connection string `json:"connection,omitempty"`
}

// readStatus reads the truth from the databases: leaders from pg_locks and
// projectord.nodes on the coordination database, progress, status and halts
// from the checkpoints, head, lag and horizon from the source.
func readStatus(ctx context.Context, cfg *config.Config, pools map[string]*pgxpool.Pool) (statusDoc, error) {
	// Projectors by their configured version's checkpoint (daemon.Keyed).
	cfg = daemon.Keyed(cfg)
	timeout := cfg.Database.QueryTimeout
	trusted := map[string]bool{}
	pool := func(url string) (*pgxpool.Pool, error) {
		p, ok := pools[url]
		if !ok {
			var err error
			if p, err = newPool(ctx, cfg, url); err != nil {
				return nil, err
			}
			pools[url] = p
		}
		// Nothing is read from a schema another role planted (CheckTrust).
		if !trusted[url] {
			if err := store.CheckTrust(ctx, p); err != nil {
				return nil, err
			}
			trusted[url] = true
		}
		return p, nil
	}
	src, err := pool(cfg.Database.URL)
	if err != nil {
		return statusDoc{}, err
	}
	// The source table is the one the daemon resolves.
	source, err := daemon.SourceOf(cfg.Source).Resolve(ctx, src)
	if err != nil {
		return statusDoc{}, err
	}
	reader := store.NewReader(src, source, timeout)
	doc := statusDoc{TakenAt: time.Now().UTC(), Ordering: string(reader.Ordering()),
		LeaseTimeoutSeconds: cfg.Coordination.LeaseTimeout.Seconds(), Projectors: []projectorDoc{}, Nodes: []nodeDoc{},
		Balance: cfg.Coordination.Balance, Versions: []versionDoc{}}
	head, hasHead, err := reader.Newest(ctx)
	if err != nil {
		return statusDoc{}, err
	}
	if hasHead {
		doc.Head = &cursorDoc{XID: head.XID, Position: head.Position}
	}
	readable, ok, err := reader.Head(ctx)
	if err != nil {
		return statusDoc{}, err
	}
	if ok {
		doc.ReadableHead = &cursorDoc{XID: readable.XID, Position: readable.Position}
	}

	// Leaders: who holds each lock now, and the node rows.
	names := make([]string, len(cfg.Projectors))
	for i, p := range cfg.Projectors {
		names[i] = p.Name
	}
	ids, err := store.ProjectorIDs(ctx, src, names, timeout)
	if err != nil {
		return statusDoc{}, err
	}
	coordURL := cfg.Coordination.URL
	if coordURL == "" {
		coordURL = cfg.Database.URL
	}
	coordPool, err := pool(coordURL)
	if err != nil {
		return statusDoc{}, err
	}
	idList := make([]int32, 0, len(ids))
	for _, id := range ids {
		idList = append(idList, id)
	}
	holders, err := store.LockHolders(ctx, coordPool, cfg.Coordination.LockNamespace, idList, timeout)
	if err != nil {
		return statusDoc{}, err
	}
	nodes, err := store.Nodes(ctx, coordPool, timeout)
	if err != nil {
		return statusDoc{}, err
	}
	h, err := store.HorizonHolder(ctx, src, timeout)
	if err != nil {
		return statusDoc{}, err
	}
	if h.PID != 0 || h.Prepared != "" {
		hd := &horizonDoc{AgeSeconds: h.Age.Seconds(), PID: h.PID, Prepared: h.Prepared, ApplicationName: h.ApplicationName}
		hd.Node, hd.Connection, hd.Own = h.Owner(nodes)
		doc.Horizon = hd
	}

	// Checkpoints, one query per target database.
	lists := map[string]map[string]store.Checkpoint{}
	superseded := map[string]bool{}
	leads := map[string][]string{}
	weights := daemon.Weights(cfg)
	ledWeight := map[string]int{}
	for _, p := range cfg.Projectors {
		url := p.Sink.TargetURL()
		if url == "" {
			url = cfg.Database.URL
		}
		cps, ok := lists[url]
		if !ok {
			tp, err := pool(url)
			if err != nil {
				return statusDoc{}, err
			}
			all, err := store.NewTarget(tp, timeout).List(ctx)
			if err != nil {
				return statusDoc{}, err
			}
			cps = make(map[string]store.Checkpoint, len(all))
			for _, c := range all {
				cps[c.Projector] = c
			}
			lists[url] = cps
			vs, err := readVersions(ctx, store.NewTarget(tp, timeout), cps, func(ctx context.Context, c store.Checkpoint) (int64, error) {
				if !hasHead || !c.Cursor.Less(head) {
					return 0, nil
				}
				n, _, err := reader.Lag(ctx, c.Cursor, store.Filter{PositionFloor: c.PositionFloor})
				return n, err
			}, doc.TakenAt)
			if err != nil {
				return statusDoc{}, err
			}
			doc.Versions = append(doc.Versions, vs...)
			for _, v := range vs {
				superseded[v.Checkpoint] = v.State == stateSuperseded || v.State == "retired"
			}
		}
		pd := projectorDoc{Name: p.Name}
		var cursor store.Cursor
		// Lag counts the events the projector's handlers act on, as the
		// replicas' projector_lag_events does (runner.HandledFilter).
		types, all := []string(nil), true // an HTTP receiver gets every event read
		if p.Sink.SQL != nil {
			sink, err := store.CompileSQLSink(p.Sink.SQL.Handlers, p.Sink.SQL.Reset)
			if err != nil {
				return statusDoc{}, &configError{err: fmt.Errorf("projector %s: %w", p.Name, err)}
			}
			types, all = sink.HandledTypes()
		}
		filter, handles := runner.HandledFilter(daemon.ProjectorOf(p, cfg, nil, nil).Filter, types, all)
		c, hasCP := cps[p.Name]
		if hasCP {
			status := c.Status
			pd.RecordedStatus = &status
			pd.Checkpoint = &checkpointDoc{Cursor: cursorDoc{XID: c.Cursor.XID, Position: c.Cursor.Position},
				Ordering: string(c.Ordering), PositionFloor: c.PositionFloor, Epoch: c.Epoch,
				LeaderNode: c.LeaderNode, UpdatedAt: c.UpdatedAt}
			if c.LeaderSince.Year() > 1970 {
				since := c.LeaderSince
				pd.Checkpoint.LeaderSince = &since
			}
			pd.EventsApplied = c.EventsApplied
			if c.LastError != "" {
				msg := c.LastError
				pd.LastError = &msg
				if !c.LastErrorAt.IsZero() {
					at := c.LastErrorAt
					pd.LastErrorAt = &at
				}
			}
			if hr := c.Halt; hr != nil {
				pd.Halt = &haltDoc{By: hr.By, At: hr.At, AgeSeconds: max(0, doc.TakenAt.Sub(hr.At).Seconds())}
				if hr.Event != nil {
					pd.Halt.Event = &cursorDoc{XID: hr.Event.XID, Position: hr.Event.Position}
				}
			}
			cursor, filter.PositionFloor = c.Cursor, c.PositionFloor
			if c.Status == store.StatusPaused {
				// Only a paused projector costs this query.
				tp, err := pool(url)
				if err != nil {
					return statusDoc{}, err
				}
				pr, err := store.NewTarget(tp, timeout).PauseOf(ctx, p.Name)
				if err != nil {
					return statusDoc{}, err
				}
				if pr != nil {
					pd.Pause = &pauseDoc{By: pr.By, At: pr.At, AgeSeconds: max(0, doc.TakenAt.Sub(pr.At).Seconds())}
				}
			}
		}
		if id, ok := ids[p.Name]; ok {
			if lh, ok := holders[id]; ok {
				ld := &leaderDoc{Node: lh.Node, PID: lh.PID}
				if lh.Node != "" {
					at, age := lh.HeartbeatAt, lh.HeartbeatAge.Seconds()
					ld.HeartbeatAt, ld.HeartbeatAgeSeconds = &at, &age
					leads[lh.Node] = append(leads[lh.Node], p.Name)
					ledWeight[lh.Node] += weights[p.Name]
					if hasCP && c.LeaderNode == lh.Node && c.LeaderSince.Year() > 1970 {
						since := c.LeaderSince
						ld.Since = &since
					}
				}
				pd.Leader = ld
			}
		}
		pd.State = projectorState(hasCP, c, pd.Leader, cfg.Coordination.LeaseTimeout)
		if superseded[p.Name] && pd.Leader == nil {
			pd.State = stateSuperseded
		}
		if pd.State != stateHalted && pd.State != stateSuperseded {
			doc.TotalWeight += weights[p.Name]
		}
		if hasHead && handles && cursor.Less(head) {
			n, oldest, err := reader.Lag(ctx, cursor, filter)
			if err != nil {
				return statusDoc{}, fmt.Errorf("projector %s: %w", p.Name, err)
			}
			pd.LagEvents = n
			if n > 0 && !oldest.IsZero() {
				pd.LagSeconds = max(0, time.Since(oldest).Seconds())
			}
		}
		doc.Projectors = append(doc.Projectors, pd)
	}
	var members []string
	for _, n := range nodes {
		nd := nodeDoc{NodeID: n.ID, Hostname: n.Hostname, Version: n.Version, BackendPID: n.BackendPID,
			StartedAt: n.StartedAt, HeartbeatAt: n.HeartbeatAt, HeartbeatAgeSeconds: n.HeartbeatAge.Seconds(),
			State: nodeAlive, SessionAlive: n.SessionAlive, Leads: leads[n.ID], LedWeight: ledWeight[n.ID]}
		if n.HeartbeatAge >= cfg.Coordination.LeaseTimeout {
			nd.State = nodeDead
		}
		if nd.Leads == nil {
			nd.Leads = []string{}
		}
		if nd.State == nodeAlive && n.SessionAlive {
			members = append(members, n.ID)
		}
		doc.Nodes = append(doc.Nodes, nd)
	}
	if cfg.Coordination.Balance {
		targets := balance.Targets(members, ledWeight, doc.TotalWeight)
		for i := range doc.Nodes {
			if t, ok := targets[doc.Nodes[i].NodeID]; ok {
				doc.Nodes[i].TargetWeight = &t
			}
		}
	}
	return doc, nil
}

// projectorState derives a projector's state; see the constants.
func projectorState(hasCP bool, c store.Checkpoint, leader *leaderDoc, lease time.Duration) string {
	switch {
	case hasCP && c.Status == store.StatusHalted:
		return stateHalted
	case hasCP && c.Status == store.StatusPaused:
		// Whoever holds the lock, or nobody: the pause holds until resumed.
		return statePaused
	case leader != nil && leader.HeartbeatAgeSeconds != nil && *leader.HeartbeatAgeSeconds < lease.Seconds():
		return stateRunning
	case leader != nil:
		return stateUnresponsive
	case !hasCP:
		return stateNew
	}
	return stateNoLeader
}

// printHeader says when the status was read, and with --watch how often.
func printHeader(w io.Writer, at time.Time, watch bool, interval time.Duration) {
	if watch {
		fmt.Fprintf(w, "projectord status at %s, every %s (Ctrl-C to stop)\n\n", at.Format(time.RFC3339), interval)
		return
	}
	fmt.Fprintf(w, "projectord status at %s\n\n", at.Format(time.RFC3339))
}

func printStatus(w io.Writer, s statusDoc) {
	xid8 := s.Ordering != string(store.OrderPosition)
	cur := func(c *cursorDoc) string {
		switch {
		case c == nil:
			return "-"
		case xid8:
			return fmt.Sprintf("%d/%d", c.XID, c.Position)
		}
		return fmt.Sprintf("%d", c.Position)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	cols := "CURSOR\tHEAD"
	if xid8 {
		cols = "CURSOR (XID/POS)\tHEAD (XID/POS)"
	}
	fmt.Fprintf(tw, "PROJECTOR\tLEADER\tHEARTBEAT\t%s\tLAG\tLAG(s)\tSTATE\tLAST ERROR\n", cols)
	var halted []projectorDoc
	for _, p := range s.Projectors {
		leader, hb := "-", "-"
		if l := p.Leader; l != nil {
			leader = printable(l.Node)
			if l.Node == "" {
				leader = fmt.Sprintf("pid %d (no node row)", l.PID)
			}
			if l.HeartbeatAgeSeconds != nil {
				hb = age(*l.HeartbeatAgeSeconds)
			}
		}
		var cursor *cursorDoc
		if p.Checkpoint != nil {
			cursor = &p.Checkpoint.Cursor
		}
		lastErr := "-"
		if p.LastError != nil {
			lastErr = truncate(printable(*p.LastError), 80)
			if p.LastErrorAt != nil {
				lastErr += fmt.Sprintf(" (%s ago)", age(s.TakenAt.Sub(*p.LastErrorAt).Seconds()))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%.1f\t%s\t%s\n", printable(p.Name), leader, hb, cur(cursor), cur(s.Head),
			p.LagEvents, p.LagSeconds, p.State, lastErr)
		if p.State == stateHalted || p.State == statePaused {
			halted = append(halted, p)
		}
	}
	_ = tw.Flush()
	for i, p := range halted {
		if i == 0 {
			fmt.Fprintln(w)
		}
		name := printable(p.Name)
		if pr := p.Pause; p.State == statePaused && pr != nil {
			fmt.Fprintf(w, "%s was paused by %s %s ago (%s); it applies nothing until `projectord resume %s`\n",
				name, dash(printable(pr.By)), age(pr.AgeSeconds), pr.At.UTC().Format(time.RFC3339), name)
			continue
		}
		h := p.Halt
		if p.State == statePaused {
			continue
		}
		if h == nil {
			fmt.Fprintf(w, "%s is halted (recorded without who, when and which event); its last error says why\n", name)
			continue
		}
		on := "a handler that fails for every event"
		if h.Event != nil {
			on = "event " + cur(h.Event)
			if xid8 {
				on += " (xid/position)"
			}
		}
		fmt.Fprintf(w, "%s was halted by %s %s ago (%s) on %s; run `projectord resume %s` once the cause is fixed\n",
			name, dash(printable(h.By)), age(h.AgeSeconds), h.At.UTC().Format(time.RFC3339), on, name)
	}

	printVersions(w, s.Versions)

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHOST\tVERSION\tSTARTED\tHEARTBEAT\tLEADS\tWEIGHT\tTARGET\tSTATE")
	for _, n := range s.Nodes {
		target := "-"
		if n.TargetWeight != nil {
			target = fmt.Sprint(*n.TargetWeight)
		}
		state := n.State
		if n.State == nodeAlive && !n.SessionAlive {
			state = nodeAlive + " (session gone)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s ago\t%d\t%d\t%s\t%s\n", printable(n.NodeID), dash(printable(n.Hostname)), dash(printable(n.Version)),
			n.StartedAt.UTC().Format(time.RFC3339), age(n.HeartbeatAgeSeconds), len(n.Leads), n.LedWeight, target, state)
	}
	if len(s.Nodes) == 0 {
		fmt.Fprintln(tw, "(no node rows)")
	}
	_ = tw.Flush()

	if hz := s.Horizon; hz != nil && hz.AgeSeconds >= horizonThreshold.Seconds() {
		var holder string
		switch {
		case hz.Prepared != "":
			holder = "prepared transaction " + printable(hz.Prepared)
		case hz.Own && hz.Connection == store.OwnPool:
			holder = fmt.Sprintf("projectord's own batch on node %s (pid %d)", printable(hz.Node), hz.PID)
		case hz.Own:
			holder = fmt.Sprintf("projectord's coordination session of node %s (pid %d)", printable(hz.Node), hz.PID)
		case hz.ApplicationName != "":
			holder = fmt.Sprintf("pid %d (application_name %s)", hz.PID, printable(hz.ApplicationName))
		default:
			holder = fmt.Sprintf("pid %d", hz.PID)
		}
		fmt.Fprintf(w, "\nxmin horizon held for %.1fs by %s\n", hz.AgeSeconds, holder)
	}
}

// age formats seconds for a table: 0.4s, 12s, 3m05s, 2h07m, 3d04h.
func age(secs float64) string {
	secs = max(0, secs)
	d := time.Duration(secs * float64(time.Second))
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", secs)
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(secs))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// truncate shortens s to n runes, never inside a rune.
func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if utf8.RuneCountInString(s) > n {
		return string([]rune(s)[:n-1]) + "…"
	}
	return s
}
