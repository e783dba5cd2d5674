package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgcluster"
)

// The JSON of `projectord status -o json` as README documents it, decoded
// on its own so that these tests check the contract, not a Go type.
type stDoc struct {
	TakenAt             time.Time     `json:"taken_at"`
	Ordering            string        `json:"ordering"`
	LeaseTimeoutSeconds float64       `json:"lease_timeout_seconds"`
	Head                *stCursor     `json:"head"`
	Projectors          []stProjector `json:"projectors"`
	Nodes               []stNode      `json:"nodes"`
	Horizon             *stHorizon    `json:"horizon"`
}

type stCursor struct {
	XID      uint64 `json:"xid"`
	Position int64  `json:"position"`
}

type stProjector struct {
	Name   string `json:"name"`
	State  string `json:"state"`
	Leader *struct {
		Node                string     `json:"node"`
		PID                 int32      `json:"pid"`
		Since               *time.Time `json:"since"`
		HeartbeatAgeSeconds *float64   `json:"heartbeat_age_seconds"`
	} `json:"leader"`
	RecordedStatus *string `json:"recorded_status"`
	Checkpoint     *struct {
		Cursor     stCursor `json:"cursor"`
		LeaderNode string   `json:"leader_node"`
	} `json:"checkpoint"`
	LagEvents     int64      `json:"lag_events"`
	LagSeconds    float64    `json:"lag_seconds"`
	EventsApplied int64      `json:"events_applied"`
	LastError     *string    `json:"last_error"`
	LastErrorAt   *time.Time `json:"last_error_at"`
	Halt          *struct {
		By    string    `json:"by"`
		At    time.Time `json:"at"`
		Event *stCursor `json:"event"`
	} `json:"halt"`
}

func (p stProjector) leaderNode() string {
	if p.Leader == nil {
		return ""
	}
	return p.Leader.Node
}

type stNode struct {
	NodeID              string    `json:"node_id"`
	Hostname            string    `json:"hostname"`
	Version             string    `json:"version"`
	StartedAt           time.Time `json:"started_at"`
	HeartbeatAt         time.Time `json:"heartbeat_at"`
	HeartbeatAgeSeconds float64   `json:"heartbeat_age_seconds"`
	State               string    `json:"state"`
	SessionAlive        bool      `json:"session_alive"`
	Leads               []string  `json:"leads"`
	LedWeight           int       `json:"led_weight"`
	TargetWeight        *int      `json:"target_weight"`
}

type stHorizon struct {
	AgeSeconds      float64 `json:"age_seconds"`
	PID             int     `json:"pid"`
	ApplicationName string  `json:"application_name"`
	Own             bool    `json:"own"`
	Node            string  `json:"node"`
	Connection      string  `json:"connection"`
}

func (d stDoc) projector(t *testing.T, name string) stProjector {
	t.Helper()
	for _, p := range d.Projectors {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("status lists no projector %s", name)
	return stProjector{}
}

func (d stDoc) node(id string) (stNode, bool) {
	for _, n := range d.Nodes {
		if n.NodeID == id {
			return n, true
		}
	}
	return stNode{}, false
}

// statusJSON runs `projectord status -o json` and decodes it.
func statusJSON(t *testing.T, cfgFile string) stDoc {
	t.Helper()
	code, out, stderr := cli(t, "status", "-o", "json", "--config", cfgFile)
	require.Equal(t, exitOK, code, stderr)
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(out), &fields))
	keys := slices.Sorted(maps.Keys(fields))
	require.Subset(t, keys, []string{"taken_at", "ordering", "lease_timeout_seconds", "head", "projectors", "nodes", "horizon"})
	require.NotContains(t, keys, "ready", "a CLI cannot know readiness")
	var doc stDoc
	require.NoError(t, json.Unmarshal([]byte(out), &doc))
	return doc
}

// statusConfig is a configuration for the CLI with the replicas' lease
// timeout (ob.replica's), so it judges heartbeats as they do.
func (ob *obsBundle) statusConfig(t *testing.T, projectors string) string {
	t.Helper()
	return writeFile(t, "status.yaml", fmt.Sprintf("database: {url: '%s'}\ncoordination: {lease_timeout: 3s}\nprojectors:\n%s", ob.url, projectors))
}

// lockTruth returns, per projector, the node whose coordination session
// holds its advisory lock in pg_locks, named by the session's own
// application_name ("projectord-coord NODE"), independently of the node rows
// that status reads.
func (ob *obsBundle) lockTruth(t *testing.T) map[string]string {
	t.Helper()
	rows, err := ob.pool.Query(ob.ctx, `SELECT p.name, a.application_name
		FROM pg_locks l JOIN projectord.projectors p ON p.id = l.objid::int8
		JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.classid = 1886547818::int4::oid AND l.objsubid = 2 AND l.granted
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var name, app string
		require.NoError(t, rows.Scan(&name, &app))
		node, ok := strings.CutPrefix(app, "projectord-coord ")
		require.True(t, ok, "lock of %s held by %q", name, app)
		out[name] = node
	}
	require.NoError(t, rows.Err())
	return out
}

// waitLed waits until n projectors are registered and led.
func (ob *obsBundle) waitLed(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 30*time.Second, func() bool {
		var ids int
		return ob.pool.QueryRow(ob.ctx, `SELECT count(*) FROM projectord.projectors`).Scan(&ids) == nil && ids == n
	})
	waitFor(t, 30*time.Second, func() bool { return len(ob.lockTruth(t)) == n })
}

// shortTxWriter appends events in short transactions (each about 20 ms, holding
// an xid most of the time) until stopped or the test ends.
func (ob *obsBundle) shortTxWriter(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			tx, err := ob.pool.Begin(ctx)
			if err != nil {
				continue
			}
			_, err = tx.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('w-' || gen_random_uuid(), 1, 'A', '{}')`)
			if err == nil {
				_, err = tx.Exec(ctx, `SELECT pg_sleep(0.02)`)
			}
			if err == nil {
				_ = tx.Commit(ctx)
			} else {
				_ = tx.Rollback(context.Background())
			}
		}
	}()
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

// setupObsCluster is setupObs on a PostgreSQL cluster of its own: the xmin
// horizon is the whole cluster's, and the other tests' transactions must
// not hold it.
func setupObsCluster(t *testing.T) *obsBundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Close() })
	pool, err := pgxpool.New(t.Context(), cluster.URL("postgres"))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `CREATE TABLE applied (projector text NOT NULL, position bigint NOT NULL)`)
	require.NoError(t, err)
	return &obsBundle{ctx: t.Context(), url: cluster.URL("postgres"), pool: pool}
}

// TestStatusLeadersAreTheLockHolders runs two replicas and a writer and
// compares, at every sample, the leaders `projectord status -o json` names
// with pg_locks read just before and just after it. It kills the leader
// (SIGKILL), freezes the survivor (SIGSTOP) and kills it too: status never
// names a node whose session holds no lock, calls a holder "running" only
// while its heartbeat is fresh, shows a frozen one "unresponsive", lists
// both nodes with their heartbeat ages and the silent ones as dead, and
// ends with every projector "no leader".
func TestStatusLeadersAreTheLockHolders(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 200)
	projectors := []string{"alpha", "beta", "gamma"}
	procs := map[string]*proc{}
	procs["node-a"], _ = ob.replica(t, "node-a", sinkYAML(projectors...))
	ob.waitLed(t, 3)
	procs["node-b"], _ = ob.replica(t, "node-b", sinkYAML(projectors...))
	stopWriter := ob.shortTxWriter(t)
	f := ob.statusConfig(t, sinkYAML(projectors...))
	waitFor(t, 30*time.Second, func() bool { return len(statusJSON(t, f).Nodes) == 2 })

	samples, named, states := 0, map[string]int{}, map[string]int{}
	// sample runs status between two reads of pg_locks and checks it
	// against them: a projector's leader is what pg_locks said before or
	// after, or nobody when those differ (a lock changes hands through
	// nobody).
	sample := func() stDoc {
		t.Helper()
		before := ob.lockTruth(t)
		doc := statusJSON(t, f)
		after := ob.lockTruth(t)
		samples++
		leads := map[string][]string{}
		for _, name := range projectors {
			p := doc.projector(t, name)
			states[p.State]++
			got := p.leaderNode()
			ok := got == before[name] || got == after[name] || (got == "" && before[name] != after[name])
			require.True(t, ok, "%s: status names leader %q, pg_locks said %q before and %q after", name, got, before[name], after[name])
			if p.Leader == nil {
				require.Contains(t, []string{"no leader", "new"}, p.State, "%s without a leader", name)
				continue
			}
			named[got]++
			leads[got] = append(leads[got], name)
			require.NotNil(t, p.Leader.HeartbeatAgeSeconds, "%s: a leader with a node row has a heartbeat age", name)
			fresh := *p.Leader.HeartbeatAgeSeconds < 3
			require.Equal(t, map[bool]string{true: "running", false: "unresponsive"}[fresh], p.State,
				"%s led by %s, heartbeat %.2fs ago (lease_timeout 3s)", name, got, *p.Leader.HeartbeatAgeSeconds)
		}
		targets := 0
		for _, n := range doc.Nodes {
			require.GreaterOrEqual(t, n.HeartbeatAgeSeconds, 0.0)
			require.Equal(t, map[bool]string{true: "alive", false: "dead"}[n.HeartbeatAgeSeconds < 3], n.State, "node %s", n.NodeID)
			require.ElementsMatch(t, leads[n.NodeID], n.Leads, "node %s leads what the projectors say", n.NodeID)
			require.Equal(t, len(n.Leads), n.LedWeight, "node %s: unit weights", n.NodeID)
			// Only a node that counts for balancing has a share: a fresh
			// heartbeat and a connected session (a killed node's row stays
			// fresh for a while, its session is gone at once).
			require.Equal(t, n.State == "alive" && n.SessionAlive, n.TargetWeight != nil, "node %s: a target only while it counts", n.NodeID)
			if n.TargetWeight != nil {
				targets += *n.TargetWeight
			}
		}
		if targets > 0 {
			require.Equal(t, len(projectors), targets, "the live nodes' targets share every projector")
		}
		return doc
	}
	allLedBy := func(doc stDoc, node, state string) bool {
		for _, name := range projectors {
			if p := doc.projector(t, name); p.leaderNode() != node || p.State != state {
				return false
			}
		}
		return true
	}

	// Both alive: every projector led, by a running node.
	var leader string
	for range 10 {
		doc := sample()
		require.Len(t, doc.Nodes, 2)
		for _, n := range doc.Nodes {
			require.Equal(t, "alive", n.State, "node %s", n.NodeID)
			require.NotEmpty(t, n.Version)
			require.NotEmpty(t, n.Hostname)
		}
		for _, name := range projectors {
			p := doc.projector(t, name)
			if p.Leader != nil {
				require.Equal(t, "running", p.State)
			}
		}
		leader = doc.projector(t, "alpha").leaderNode()
	}
	require.NotEmpty(t, leader, "alpha is led")
	survivor := map[string]string{"node-a": "node-b", "node-b": "node-a"}[leader]

	// The leader dies: its backend goes, and with it every lock.
	require.NoError(t, procs[leader].cmd.Process.Signal(syscall.SIGKILL))
	<-procs[leader].exited
	waitFor(t, 60*time.Second, func() bool { return allLedBy(sample(), survivor, "running") })
	// Its row stays, silent: alive until lease_timeout, dead after.
	waitFor(t, 30*time.Second, func() bool {
		doc := sample()
		n, ok := doc.node(leader)
		return ok && n.State == "dead"
	})

	// The survivor freezes: it keeps its locks, and its silence shows. It
	// is idle first, so that it freezes with no transaction open: one would
	// hold the xmin horizon of the cluster the other tests share.
	stopWriter()
	waitFor(t, 60*time.Second, func() bool {
		doc := sample()
		for _, name := range projectors {
			if p := doc.projector(t, name); p.Checkpoint == nil || p.Checkpoint.Cursor != *doc.Head {
				return false
			}
		}
		return true
	})
	require.NoError(t, procs[survivor].cmd.Process.Signal(syscall.SIGSTOP))
	waitFor(t, 60*time.Second, func() bool { return allLedBy(sample(), survivor, "unresponsive") })
	doc := sample()
	for _, n := range doc.Nodes {
		require.Equal(t, "dead", n.State, "node %s", n.NodeID)
	}
	code, table, stderr := cli(t, "status", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Regexp(t, `(?m)^alpha\s+`+survivor+`\s+\d+(\.\d)?s\s+\d+/\d+\s+\d+/\d+\s+\d+\s+[\d.]+\s+unresponsive\s`, table)

	// Then it dies too: nobody leads.
	require.NoError(t, procs[survivor].cmd.Process.Signal(syscall.SIGKILL))
	<-procs[survivor].exited
	waitFor(t, 60*time.Second, func() bool { return allLedBy(sample(), "", "no leader") })
	doc = sample()
	require.Len(t, doc.Nodes, 2, "rows of dead nodes are shown until they expire")
	for _, n := range doc.Nodes {
		require.Equal(t, "dead", n.State, "node %s", n.NodeID)
		require.Empty(t, n.Leads)
		require.GreaterOrEqual(t, n.HeartbeatAgeSeconds, 3.0)
	}
	code, table, stderr = cli(t, "status", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	for _, name := range projectors {
		require.Regexp(t, `(?m)^`+name+`\s+-\s+-\s+\d+/\d+\s+\d+/\d+\s+\d+\s+[\d.]+\s+no leader\s+-$`, table)
	}
	require.Regexp(t, `(?m)^NODE\s+HOST\s+VERSION\s+STARTED\s+HEARTBEAT\s+LEADS\s+WEIGHT\s+TARGET\s+STATE$`, table)
	for _, node := range []string{"node-a", "node-b"} {
		require.Regexp(t, `(?m)^`+node+`\s+\S+\s+\S+\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\s+\S+ ago\s+0\s+0\s+-\s+dead$`, table)
	}
	t.Logf("%d samples, each between two reads of pg_locks; leaders named (node: projector-samples): %v; states: %v", samples, named, states)
}

// TestStatusShowsAHaltAsRecorded halts a projector on one event whose xid
// is later but whose position is lower than the events applied before it,
// so the checkpoint's position is past the failed event's: status shows no
// leader (nobody holds the lock), the state halted, the cursor as
// xid/position, who halted it, when and on which event, and the last error
// with its time.
func TestStatusShowsAHaltAsRecorded(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 3)
	// The early transaction takes its xid first and inserts last: its
	// events have the higher positions and the lower xid, so they are
	// applied before the bad event, which has the lower position.
	early, err := ob.pool.Begin(ob.ctx)
	require.NoError(t, err)
	defer early.Rollback(ob.ctx)
	_, err = early.Exec(ob.ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	var bad store.Cursor
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ('bad', 1, 'A', '{"n":"not a number"}') RETURNING transaction_id, global_position`).Scan(&bad.XID, &bad.Position))
	var good store.Cursor
	require.NoError(t, early.QueryRow(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		SELECT 'good-' || g, 1, 'A', '{}' FROM generate_series(1, 5) g
		RETURNING transaction_id, global_position`).Scan(&good.XID, &good.Position))
	require.NoError(t, early.Commit(ob.ctx))
	var last store.Cursor
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT transaction_id, global_position FROM events
		WHERE transaction_id = $1 ORDER BY global_position DESC LIMIT 1`, good.XID).Scan(&last.XID, &last.Position))
	require.True(t, last.Less(bad) && last.Position > bad.Position)

	projector := `  - name: poison
    on_error: {max_attempts: 1, then: halt}
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES ('poison', coalesce((@data->>'n')::bigint, @position))"}}}
`
	_, _ = ob.replica(t, "node-h", projector)
	target := store.NewTarget(ob.pool, 5*time.Second)
	var cp store.Checkpoint
	waitFor(t, 30*time.Second, func() bool {
		c, ok, err := target.Load(ob.ctx, "poison")
		cp = c
		return err == nil && ok && cp.Status == store.StatusHalted
	})
	require.NotNil(t, cp.Halt, "the halting leader records who, when and which event")
	waitFor(t, 30*time.Second, func() bool { return len(ob.lockTruth(t)) == 0 })
	cp, _, err = target.Load(ob.ctx, "poison")
	require.NoError(t, err)
	require.NotNil(t, cp.Halt)
	require.Equal(t, &bad, cp.Halt.Event)
	require.Equal(t, last, cp.Cursor, "the cursor is the last good event, whose position is past the bad one's")

	f := ob.statusConfig(t, projector)
	code, table, stderr := cli(t, "status", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Regexp(t, fmt.Sprintf(`(?m)^poison\s+-\s+-\s+%d/%d\s+\d+/\d+\s+1\s+[\d.]+\s+halted\s+event %d/%d .*\(\d+(\.\d)?s ago\)$`,
		last.XID, last.Position, bad.XID, bad.Position), table)
	require.Regexp(t, fmt.Sprintf("(?m)^poison was halted by node-h \\d+(\\.\\d)?s ago \\(%s\\) on event %d/%d \\(xid/position\\); run `projectord resume poison`",
		regexp.QuoteMeta(cp.Halt.At.UTC().Format(time.RFC3339)), bad.XID, bad.Position), table)
	// It leads nothing, and its target is 0: a halted projector is no one's share.
	require.Regexp(t, `(?m)^node-h\s+\S+\s+\S+\s+\S+\s+\d+(\.\d)?s ago\s+0\s+0\s+0\s+alive$`, table)

	doc := statusJSON(t, f)
	p := doc.projector(t, "poison")
	require.Equal(t, "halted", p.State)
	require.Nil(t, p.Leader, "nobody holds a halted projector's lock")
	require.NotNil(t, p.RecordedStatus)
	require.Equal(t, "halted", *p.RecordedStatus)
	require.Equal(t, stCursor{XID: last.XID, Position: last.Position}, p.Checkpoint.Cursor)
	require.Equal(t, int64(1), p.LagEvents, "the bad event is still ahead of the cursor")
	require.NotNil(t, p.Halt)
	require.Equal(t, "node-h", p.Halt.By)
	require.Equal(t, cp.Halt.By, p.Halt.By)
	require.True(t, cp.Halt.At.Equal(p.Halt.At), "halt time %s, recorded %s", p.Halt.At, cp.Halt.At)
	require.Equal(t, &stCursor{XID: bad.XID, Position: bad.Position}, p.Halt.Event)
	require.NotNil(t, p.LastError)
	require.Equal(t, cp.LastError, *p.LastError)
	require.NotNil(t, p.LastErrorAt)
	require.True(t, cp.LastErrorAt.Equal(*p.LastErrorAt), "last error time %s, recorded %s", p.LastErrorAt, cp.LastErrorAt)
	n, ok := doc.node("node-h")
	require.True(t, ok)
	require.Equal(t, "alive", n.State)
	require.Empty(t, n.Leads)
}

// TestStatusNamesTheHorizonHolderPastAThreshold: under a writer of short
// transactions the table names no horizon holder, though one holds an xid
// at most moments; a handler that sleeps 3 s inside its batch holds the
// horizon, and status names it as projectord's own batch, with its node
// and pid.
func TestStatusNamesTheHorizonHolderPastAThreshold(t *testing.T) {
	t.Parallel()
	ob := setupObsCluster(t)
	projectors := `  - name: fast
    batch_size: 50
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES ('fast', @position)"}}}
  - name: slow
    batch_size: 1
    sink: {sql: {handlers: {S: "WITH w AS (INSERT INTO applied VALUES ('slow', @position) RETURNING 1) SELECT pg_sleep(3) FROM w"}}}
`
	_, _ = ob.replica(t, "node-z", projectors)
	ob.waitLed(t, 2)
	ob.shortTxWriter(t)
	f := ob.statusConfig(t, projectors)
	held := 0
	for range 15 {
		code, table, stderr := cli(t, "status", "--config", f)
		require.Equal(t, exitOK, code, stderr)
		require.NotContains(t, table, "xmin horizon", "no holder named under short transactions")
		if doc := statusJSON(t, f); doc.Horizon != nil {
			held++
			require.Less(t, doc.Horizon.AgeSeconds, 1.0, "only short transactions run")
		}
	}
	require.Positive(t, held, "the writer's transactions held an xid at some samples")

	_, err := ob.pool.Exec(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('slow', 1, 'S', '{}')`)
	require.NoError(t, err)
	_, err = ob.pool.Exec(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('slow', 2, 'S', '{}')`)
	require.NoError(t, err)
	var hz *stHorizon
	waitFor(t, 60*time.Second, func() bool {
		hz = statusJSON(t, f).Horizon
		return hz != nil && hz.AgeSeconds >= 1
	})
	require.True(t, hz.Own, "%+v", hz)
	require.Equal(t, "node-z", hz.Node)
	require.Equal(t, "pool", hz.Connection)
	require.Equal(t, "projectord node-z", hz.ApplicationName)
	var app string
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT application_name FROM pg_stat_activity WHERE pid = $1`, hz.PID).Scan(&app))
	require.Equal(t, "projectord node-z", app, "pid %d is a pool connection of node-z", hz.PID)
	var table string
	waitFor(t, 60*time.Second, func() bool {
		var code int
		code, table, _ = cli(t, "status", "--config", f)
		return code == exitOK && strings.Contains(table, "xmin horizon")
	})
	require.Regexp(t, `(?m)^xmin horizon held for \d+\.\ds by projectord's own batch on node node-z \(pid \d+\)$`, table)
}

// TestStatusWatchPrintsTheTimeOfEachRefresh reads two refreshes of
// `status --watch` from a real process: each starts with the time (UTC)
// and the interval.
func TestStatusWatchPrintsTheTimeOfEachRefresh(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 3)
	f := ob.statusConfig(t, sinkYAML("w"))
	code, _, stderr := cli(t, "migrate", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	start := time.Now().Add(-time.Second)
	p := startProc(t, "status", "--watch", "--interval", "300ms", "--config", f)
	header := regexp.MustCompile(`projectord status at (\S+), every 300ms`)
	var found [][]string
	waitFor(t, 60*time.Second, func() bool {
		found = header.FindAllStringSubmatch(p.out.String(), -1)
		return len(found) >= 2
	})
	var prev time.Time
	for _, m := range found[:2] {
		at, err := time.Parse(time.RFC3339, m[1])
		require.NoError(t, err, m[1])
		require.Equal(t, time.UTC, at.Location(), "UTC: %s", m[1])
		require.False(t, at.Before(start.Truncate(time.Second)), "%s is not before the start", at)
		require.False(t, at.After(time.Now()), "%s is not in the future", at)
		require.False(t, at.Before(prev), "refreshes in order")
		prev = at
	}
	require.Contains(t, p.out.String(), "PROJECTOR")
}
