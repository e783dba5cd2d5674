package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// The property test drives two replicas through random interleavings of what
// an operator does while writers append: restarts, killed coordination and
// pool sessions, a switch of source.ordering (the first one after `source
// prepare`), resets with DELETE reset SQL, and events that fail their handler
// under each error policy. Whatever the interleaving, the read models must
// end exact against an oracle computed from the events table: every event
// the checkpoint counts as done applied exactly once (or, when it failed,
// skipped or dead-lettered exactly once), and nothing beyond it.
//
// PROJECTORD_PROPERTY_SEEDS=N runs N seeds (default 2); PROJECTORD_PROPERTY_SEED
// replays one.

// propProjectors are the projectors under test, one per error policy, and
// one whose handler never fails.
var propProjectors = []struct {
	name, then string
	strict     bool // the handler fails on bad events
}{
	{"p_ok", "halt", false},
	{"p_skip", "skip", true},
	{"p_dl", "dead_letter", true},
	{"p_halt", "halt", true},
}

func propConfig(tb *pgBundle, t *testing.T, ordering string) *config.Config {
	var ps []config.Projector
	for _, p := range propProjectors {
		handler := fmt.Sprintf(`INSERT INTO applied (projector, position) VALUES ('%s', @position)`, p.name)
		if p.strict {
			// A bad event carries {"v": "x"}: the cast fails with 22P02.
			handler = fmt.Sprintf(`INSERT INTO applied (projector, position) VALUES ('%s', @position + 0 * (@data->>'v')::int)`, p.name)
		}
		reset := fmt.Sprintf(`DELETE FROM applied WHERE projector = '%s'`, p.name)
		if p.then == "dead_letter" {
			// The operator's reset empties the dead letters with the read
			// model: the replay records them again.
			reset = fmt.Sprintf(`WITH a AS (DELETE FROM applied WHERE projector = '%[1]s')
				DELETE FROM projectord.dead_letters WHERE projector = '%[1]s'`, p.name)
		}
		ps = append(ps, config.Projector{
			Name: p.name, BatchSize: 7,
			OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.Then(p.then)},
			Sink:    config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"*": handler}, Reset: reset}},
		})
	}
	cfg := tb.config(t, ps...)
	cfg.Source.Ordering = ordering
	return cfg
}

// propWriters append events until stopped. Each transaction holds 1-4
// events, about 4% of them bad. Under xid8 ordering three writers commit
// with random delays, out of position order; under position ordering one
// writer commits in order, since position ordering is documented to skip
// out-of-order commits.
type propWriters struct {
	tb       *pgBundle
	gate     sync.RWMutex // writers hold it shared per transaction; pause takes it
	serial   atomic.Bool  // only writer 0 writes
	stopped  atomic.Bool
	wg       sync.WaitGroup
	errs     chan error
	inserted atomic.Int64
}

func startPropWriters(tb *pgBundle, seed uint64) *propWriters {
	w := &propWriters{tb: tb, errs: make(chan error, 3)}
	for i := range 3 {
		w.wg.Add(1)
		go w.run(i, rand.New(rand.NewPCG(seed, uint64(i))))
	}
	return w
}

func (w *propWriters) run(id int, rng *rand.Rand) {
	defer w.wg.Done()
	for n := 0; !w.stopped.Load(); n++ {
		w.gate.RLock()
		if w.stopped.Load() || (id > 0 && w.serial.Load()) {
			w.gate.RUnlock()
			time.Sleep(5 * time.Millisecond) // idle writer: not synchronisation
			continue
		}
		k := 1 + rng.IntN(4)
		data := make([]string, k)
		for i := range data {
			data[i] = `{"v": 1}`
			if rng.IntN(25) == 0 {
				data[i] = `{"v": "x"}`
			}
		}
		delay := time.Duration(0)
		if !w.serial.Load() {
			delay = time.Duration(rng.IntN(15)) * time.Millisecond
		}
		err := pgx.BeginFunc(context.Background(), w.tb.pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(context.Background(), `INSERT INTO events (stream_id, stream_version, event_type, data)
				SELECT $1 || i, 1, 'E', d::jsonb FROM unnest($2::text[]) WITH ORDINALITY AS u(d, i)`,
				fmt.Sprintf("w%d-%d-", id, n), data)
			if err == nil && delay > 0 {
				time.Sleep(delay) // a slow writer commits out of order: the fault under test
			}
			return err
		})
		w.gate.RUnlock()
		if err != nil {
			w.errs <- err
			return
		}
		w.inserted.Add(int64(k))
		if w.serial.Load() {
			time.Sleep(time.Millisecond) // pace the single writer
		}
	}
}

// pause returns once no writer is inside a transaction; resume undoes it.
func (w *propWriters) pause()  { w.gate.Lock() }
func (w *propWriters) resume() { w.gate.Unlock() }

func (w *propWriters) stop(t *testing.T) {
	w.stopped.Store(true)
	w.wg.Wait()
	select {
	case err := <-w.errs:
		t.Fatalf("writer failed: %v", err)
	default:
	}
}

type propCluster struct {
	t        *testing.T
	tb       *pgBundle
	log      func(format string, args ...any)
	ordering string
	prepared bool
	replicas []*Daemon
	started  int
}

func (c *propCluster) config() *config.Config { return propConfig(c.tb, c.t, c.ordering) }

func (c *propCluster) startReplica() *Daemon {
	c.started++
	cfg := c.config()
	cfg.Coordination.NodeID = fmt.Sprintf("prop-%d", c.started)
	d := New(Options{Config: cfg, Logger: c.tb.log.Named(cfg.Coordination.NodeID), Version: "test", Migrate: true})
	require.NoError(c.t, d.Start(c.tb.ctx))
	c.t.Cleanup(func() { stopDaemon(d) })
	return d
}

func (c *propCluster) stopAll() {
	for _, d := range c.replicas {
		stopDaemon(d)
	}
	c.replicas = nil
}

func (c *propCluster) startAll() {
	for range 2 {
		c.replicas = append(c.replicas, c.startReplica())
	}
}

// fatal returns the first fatal error any replica reported, if any.
func (c *propCluster) fatal() error {
	for _, d := range c.replicas {
		if err := d.Cause(); err != nil && !errors.Is(err, ErrStopped) {
			return err
		}
	}
	return nil
}

// done is the oracle's predicate: the events the projector's checkpoint
// counts as done, by its ordering and position floor.
const propDoneSQL = `
	WITH cp AS (SELECT last_xid, last_position, position_floor, coalesce(ordering, '') AS ordering
	            FROM projectord.checkpoints WHERE projector = $1)
	SELECT e.global_position, e.data->>'v' = 'x' AS bad
	FROM events e, cp
	WHERE CASE WHEN cp.ordering = 'position' THEN e.global_position <= cp.last_position
	           ELSE (e.transaction_id, e.global_position) <= (cp.last_xid, cp.last_position)
	                OR e.global_position <= cp.position_floor END`

// propDoneSQLUnprepared is propDoneSQL before `source prepare`: the table
// has no transaction_id yet, so every checkpoint is a position one.
const propDoneSQLUnprepared = `
	SELECT e.global_position, e.data->>'v' = 'x' AS bad
	FROM events e, projectord.checkpoints cp
	WHERE cp.projector = $1 AND e.global_position <= cp.last_position`

func (c *propCluster) doneSQL() string {
	if c.prepared {
		return propDoneSQL
	}
	return propDoneSQLUnprepared
}

// checkOracle compares one projector's read model (and dead letters) with
// the events its checkpoint counts as done. It returns how many of them
// there are.
func (c *propCluster) checkOracle(t *testing.T, name string, strict bool, then string) int {
	ctx := c.tb.ctx
	rows, err := c.tb.pool.Query(ctx, c.doneSQL(), name)
	require.NoError(t, err)
	type ev struct{ bad bool }
	done := map[int64]ev{}
	for rows.Next() {
		var pos int64
		var bad bool
		require.NoError(t, rows.Scan(&pos, &bad))
		done[pos] = ev{bad: bad}
	}
	require.NoError(t, rows.Err())

	counts := func(q string) map[int64]int {
		rows, err := c.tb.pool.Query(ctx, q, name)
		require.NoError(t, err)
		out := map[int64]int{}
		for rows.Next() {
			var pos int64
			var n int
			require.NoError(t, rows.Scan(&pos, &n))
			out[pos] = n
		}
		require.NoError(t, rows.Err())
		return out
	}
	applied := counts(`SELECT position, count(*)::int FROM applied WHERE projector = $1 GROUP BY position`)
	dead := counts(`SELECT position, count(*)::int FROM projectord.dead_letters WHERE projector = $1 GROUP BY position`)

	for pos, e := range done {
		wantApplied, wantDead := 1, 0
		if strict && e.bad {
			wantApplied = 0
			if then == "dead_letter" {
				wantDead = 1
			}
		}
		require.Equal(t, wantApplied, applied[pos], "%s: applications of event %d (bad=%v)", name, pos, e.bad)
		require.Equal(t, wantDead, dead[pos], "%s: dead letters of event %d", name, pos)
	}
	for pos, n := range applied {
		_, ok := done[pos]
		require.True(t, ok, "%s: event %d applied %d times but is beyond the checkpoint", name, pos, n)
	}
	for pos := range dead {
		_, ok := done[pos]
		require.True(t, ok, "%s: event %d dead-lettered but is beyond the checkpoint", name, pos)
	}
	return len(done)
}

func propSeeds(t *testing.T) []uint64 {
	if s := os.Getenv("PROJECTORD_PROPERTY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		return []uint64{v}
	}
	n := 2
	if s := os.Getenv("PROJECTORD_PROPERTY_SEEDS"); s != "" {
		v, err := strconv.Atoi(s)
		require.NoError(t, err)
		n = v
	}
	base := uint64(time.Now().UnixNano())
	out := make([]uint64, n)
	for i := range out {
		out[i] = base + uint64(i)
	}
	return out
}

func TestPGPropertyOperatorInterleavingsStayExact(t *testing.T) {
	t.Parallel()
	for _, seed := range propSeeds(t) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			t.Logf("seed %d (replay with PROJECTORD_PROPERTY_SEED=%d)", seed, seed)
			runPropertySeed(t, seed)
		})
	}
}

func runPropertySeed(t *testing.T, seed uint64) {
	tb := setupPG(t)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b9))
	// Before `source prepare`: no xid8 column, so position ordering.
	_, err := tb.pool.Exec(tb.ctx, `ALTER TABLE events DROP COLUMN transaction_id`)
	require.NoError(t, err)
	c := &propCluster{t: t, tb: tb, ordering: "position", log: t.Logf}
	w := startPropWriters(tb, seed)
	w.serial.Store(true)
	c.startAll()

	progress := func() {
		// Let the replicas work a little: until p_ok has applied more, or a
		// bounded while (after a reset or a switch it may be replaying).
		before := tb.peek("p_ok").EventsApplied
		want := before + int64(5+rng.IntN(60))
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && tb.peek("p_ok").EventsApplied < want {
			time.Sleep(5 * time.Millisecond) // polling the checkpoint
		}
	}

	switchOrdering := func() {
		w.pause()
		// A switch to position converts exactly only where the done events
		// are a position prefix: let the replicas catch up first (a halted
		// projector may still be refused, which is the other outcome).
		if c.ordering == "xid8" {
			c.waitQuiet(t)
		}
		c.stopAll()
		from := c.ordering
		if c.ordering == "position" {
			if !c.prepared {
				for _, step := range store.PrepareSQL(store.Source{Table: "public.events", Columns: store.NativeColumns}, false, "") {
					_, err := tb.pool.Exec(tb.ctx, step.SQL)
					require.NoError(t, err, step.SQL)
				}
				c.prepared = true
			}
			c.ordering = "xid8"
		} else {
			c.ordering = "position"
		}
		t.Logf("op: switch ordering %s -> %s", from, c.ordering)
		c.startAll()
		if c.ordering == "position" {
			// Either every projector converts, or one is refused
			// (ErrOrderingChanged): then go back to xid8, as an operator
			// following the error message would.
			if err := c.waitConverted(t); err != nil {
				require.ErrorIs(t, err, store.ErrOrderingChanged)
				t.Logf("op: switch refused (%v); back to xid8", err)
				c.stopAll()
				c.ordering = "xid8"
				c.startAll()
			}
		}
		w.serial.Store(c.ordering == "position")
		w.resume()
	}

	ops := 10 + rng.IntN(6)
	for i := 0; i < ops; i++ {
		switch op := rng.IntN(10); {
		case op < 2:
			k := rng.IntN(len(c.replicas))
			t.Logf("op: restart replica %s", c.replicas[k].Node())
			stopDaemon(c.replicas[k])
			c.replicas[k] = c.startReplica()
		case op < 4:
			// The leader of a random projector, if one leads: every session
			// of its replica dies at once (its coordination session and
			// its pool connections, mid-batch or not).
			k := rng.IntN(len(c.replicas))
			p := propProjectors[rng.IntN(len(propProjectors))].name
			leading := false
			for i, d := range c.replicas {
				if d.States()[p] == runner.StateLeader {
					k, leading = i, true
				}
			}
			node := c.replicas[k].Node()
			var n int
			require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE application_name IN ('projectord ' || $1, 'projectord-coord ' || $1)`, node).Scan(&n))
			t.Logf("op: kill the sessions of %s, leader of %s? %v (%d sessions)", node, p, leading, n)
		case op < 6:
			p := propProjectors[rng.IntN(len(propProjectors))]
			cfg := c.config()
			pc, _ := cfg.Projector(p.name)
			epoch, err := store.NewTarget(tb.pool, 30*time.Second).Reset(tb.ctx, p.name, pc.Sink.SQL.Reset)
			if err != nil && strings.Contains(err.Error(), "has no checkpoint") {
				continue // never led yet: nothing to reset
			}
			require.NoError(t, err)
			t.Logf("op: reset %s (epoch %d)", p.name, epoch)
		case op < 8:
			switchOrdering()
		default:
			t.Log("op: let it run")
		}
		require.NoError(t, c.fatal(), "a replica stopped with a fatal error")
		progress()
	}

	// Quiesce: writers stop, every projector reaches the last event or halts.
	w.stop(t)
	c.waitQuiet(t)
	require.NoError(t, c.fatal())
	total := 0
	for _, p := range propProjectors {
		total = max(total, c.checkOracle(t, p.name, p.strict, p.then))
	}
	var events int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM events`).Scan(&events))
	for _, p := range propProjectors[:3] {
		require.Equal(t, events, c.doneCount(t, p.name), "%s did not reach the last event", p.name)
	}
	var bad, dead int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FILTER (WHERE data->>'v' = 'x'),
		(SELECT count(*) FROM projectord.dead_letters) FROM events`).Scan(&bad, &dead))
	t.Logf("seed %d: %d ops, %d events (%d bad, %d dead letters), p_halt %s at %s: oracle exact",
		seed, ops, events, bad, dead, tb.peek("p_halt").Status, tb.peek("p_halt").Cursor)
}

// doneCount is how many events the projector's checkpoint counts as done.
func (c *propCluster) doneCount(t *testing.T, name string) int {
	var n int
	require.NoError(t, c.tb.pool.QueryRow(c.tb.ctx, `SELECT count(*) FROM (`+c.doneSQL()+`) d`, name).Scan(&n))
	return n
}

// waitQuiet waits until every projector but p_halt counts every event done
// and p_halt has either done the same or halted.
func (c *propCluster) waitQuiet(t *testing.T) {
	var events int
	require.NoError(t, c.tb.pool.QueryRow(c.tb.ctx, `SELECT count(*) FROM events`).Scan(&events))
	require.Eventually(t, func() bool {
		for _, p := range propProjectors {
			var n int
			if err := c.tb.pool.QueryRow(context.Background(), `SELECT count(*) FROM (`+c.doneSQL()+`) d`, p.name).Scan(&n); err != nil {
				return false
			}
			if n == events {
				continue
			}
			if p.name == "p_halt" && c.haltedEverywhere(p.name) {
				continue
			}
			return false
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "the projectors never caught up: %s", c.describe(events))
}

// describe is each projector's checkpoint and each replica's state of it.
func (c *propCluster) describe(events int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d events;", events)
	for _, p := range propProjectors {
		cp := c.tb.peek(p.name)
		fmt.Fprintf(&b, " %s: %d done, cursor %s floor %d %s %q epoch %d leader %s;", p.name, c.doneCount(c.t, p.name),
			cp.Cursor, cp.PositionFloor, cp.Status, cp.LastError, cp.Epoch, cp.LeaderNode)
		for _, d := range c.replicas {
			fmt.Fprintf(&b, " %s=%s", d.Node(), d.States()[p.name])
		}
	}
	return b.String()
}

// haltedEverywhere reports whether the projector is halted in the database
// (no replica with its handlers runs it again until a reset or a resume),
// or every replica reports it halted (a halt not yet visible in the row).
func (c *propCluster) haltedEverywhere(name string) bool {
	if c.tb.peek(name).Status == store.StatusHalted {
		return true
	}
	for _, d := range c.replicas {
		if d.States()[name] != runner.StateHalted {
			return false
		}
	}
	return len(c.replicas) > 0
}

// waitConverted waits until every projector's checkpoint records the
// cluster's ordering, or a replica reports a fatal error. A halted one
// is not claimed, so not converted, until its halt ends (the claim after
// a reset or a resume converts it).
func (c *propCluster) waitConverted(t *testing.T) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if err := c.fatal(); err != nil {
			return err
		}
		all := true
		for _, p := range propProjectors {
			if cp := c.tb.peek(p.name); cp.Ordering != store.Ordering(c.ordering) && !cp.AtStart() && cp.Halt == nil {
				all = false
			}
		}
		if all {
			return nil
		}
		time.Sleep(10 * time.Millisecond) // polling the checkpoints
	}
	t.Fatal("the projectors never converted their checkpoints")
	return nil
}
