package chaos

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/testsupport"
)

// sharedProjector is one projector of TestChaosSharedReads and what its
// oracle needs to know of it.
type sharedProjector struct {
	projectorSpec
	// table is its read model: one row per event it applied, keyed by
	// position, counting applications (a double apply leaves applied = 2
	// rather than failing, so that the oracle names it).
	table string
	// slow handlers sleep in their one statement, so that the projector
	// falls behind the tail and catches up by itself.
	slow bool
}

// slowSleep is the slow handlers' sleep per event. Their filters select
// about half of the events, which the 16 gap writers commit at 250-400 per
// second (fewer on a busy machine): more than a slow projector can apply
// (at most 1/slowSleep per second), so it falls further behind as long as
// the writers write, and the catch-up after them takes seconds, not
// minutes.
const slowSleep = "0.01"

// sharedReadProjectors are 50 projectors over the gap writers' events
// (types A-D, streams "ord-…" and "cus-…"): p05, p15, … p45 slow, the
// others cycling through every kind of filter: none, one type, two types,
// a stream prefix (also "ord-1", a prefix of part of "ord-"), and both.
func sharedReadProjectors() []sharedProjector {
	type filter struct {
		types  []string
		prefix string
	}
	fast := []filter{
		{},
		{types: []string{"A"}}, {types: []string{"B"}}, {types: []string{"C"}}, {types: []string{"D"}},
		{types: []string{"A", "B"}}, {types: []string{"C", "D"}}, {types: []string{"B", "D"}},
		{prefix: "ord-"}, {prefix: "cus-"}, {prefix: "ord-1"},
		{types: []string{"A"}, prefix: "ord-"}, {types: []string{"B", "C"}, prefix: "cus-"}, {types: []string{"D"}, prefix: "ord-1"},
	}
	slow := []filter{
		{prefix: "ord-"}, {types: []string{"A", "B"}}, {prefix: "cus-"},
		{types: []string{"A", "B", "C"}, prefix: "cus-"}, {types: []string{"B", "D"}},
	}
	var out []sharedProjector
	for i := 1; i <= 50; i++ {
		p := sharedProjector{slow: i%10 == 5}
		var f filter
		if p.slow {
			f, slow = slow[0], slow[1:]
		} else {
			f, fast = fast[0], append(fast[1:], fast[0])
		}
		p.name = fmt.Sprintf("p%02d", i)
		p.table = "rm_" + p.name
		p.eventTypes, p.streamPrefix = f.types, f.prefix
		table, isSlow := p.table, p.slow
		p.handler = func(node string) string {
			from := ""
			if isSlow {
				from = "FROM pg_sleep(" + slowSleep + ")"
			}
			return fmt.Sprintf(`INSERT INTO %s AS r (position, stream_id, event_type, node)
				SELECT @position, @stream_id, @event_type, '%s' %s
				ON CONFLICT (position) DO UPDATE SET applied = r.applied + 1`, table, node, from)
		}
		out = append(out, p)
	}
	return out
}

func (p sharedProjector) describe() string {
	types := "every type"
	if p.eventTypes != nil {
		types = "types " + strings.Join(p.eventTypes, ", ")
	}
	if p.streamPrefix == "" {
		return types + ", every stream"
	}
	return fmt.Sprintf("%s, streams %s…", types, p.streamPrefix)
}

// filterSQL is a projector's filter on events e, $1 its event types (NULL
// for all) and $2 its stream prefix: what the reader selects.
const filterSQL = `($1::text[] IS NULL OR e.event_type = ANY($1::text[])) AND starts_with(e.stream_id, $2::text)`

// lag is how many of the events that p reads lie after its checkpoint.
func (e *env) lag(p sharedProjector) int {
	var n int
	require.NoError(e.t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM events e, projectord.checkpoints c
		WHERE c.projector = $3 AND (e.transaction_id, e.global_position) > (c.last_xid, c.last_position) AND `+filterSQL,
		p.eventTypes, p.streamPrefix, p.name).Scan(&n))
	return n
}

// writeMore waits until the writers have committed n more events.
func (e *env) writeMore(n int64) {
	e.mu.Lock()
	from := e.written
	e.mu.Unlock()
	testsupport.Until(e.t, fmt.Sprintf("%d more events written", n), time.Minute, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.written >= from+n
	})
}

// TestChaosSharedReads is issue 16's acceptance: 50 projectors with mixed
// filters (none, one or two event types, a stream prefix, both; see
// sharedReadProjectors), five of them with a slow handler so that they lag
// behind the tail and catch up by themselves, on three replicas under 16
// writers committing out of order with rollbacks. Once the shares are even,
// the replica leading the most projectors is killed -9; every projector it
// led is taken over by a survivor (a new epoch, another leader, a committed
// batch) while writing goes on. Then the writers stop; the slow projectors
// must have been behind then; every projector catches up; and every read
// model equals its oracle, the events table through the projector's
// filter: nothing missing, nothing extra, nothing applied twice, no halt,
// no dead letter, and no metrics sample of the replicas with two leaders of
// one projector. It must hold for any way the replicas read (each
// projector on its own, or one read fanned out to those at the tail).
func TestChaosSharedReads(t *testing.T) {
	t.Parallel()
	ps := sharedReadProjectors()
	var specs []projectorSpec
	var setup []string
	for _, p := range ps {
		specs = append(specs, p.projectorSpec)
		setup = append(setup, fmt.Sprintf(`CREATE TABLE %s (position bigint PRIMARY KEY, stream_id text NOT NULL,
			event_type text NOT NULL, node text NOT NULL, applied int NOT NULL DEFAULT 1)`, p.table))
	}
	e := newEnvWith(t, envOptions{specs: specs, setup: setup, gapWriters: 16})
	// 50 over 3 is 17, 17 and 16; waitShares allows ±1.
	even := map[string]int{"node-1": 17, "node-2": 17, "node-3": 17}
	for round := 0; round < rounds(); round++ {
		e.waitShares("every projector led, the shares even", time.Now(), time.Minute, even)
		e.writeMore(1000)
		victim, led := e.busiest(ps)
		r := e.replicas[victim]
		// The victim's epochs are read before the kill: a survivor's claim
		// bumps them, perhaps before the kill is even reaped.
		epochs := make([]int64, len(led))
		for i, p := range led {
			require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT epoch FROM projectord.checkpoints WHERE projector = $1`, p).Scan(&epochs[i]))
		}
		fault := time.Now()
		require.NoError(t, r.cmd.Process.Signal(syscall.SIGKILL))
		<-r.done
		// From here on the victim commits nothing: a batch committed past
		// these counts is a survivor's.
		applied := make([]int64, len(led))
		for i, p := range led {
			require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT events_applied FROM projectord.checkpoints WHERE projector = $1`, p).Scan(&applied[i]))
		}
		testsupport.Until(t, fmt.Sprintf("the %d projectors of %s taken over", len(led), victim), time.Minute, func() bool {
			var n int
			err := e.pool.QueryRow(e.ctx, `SELECT count(*) FROM projectord.checkpoints c
				JOIN unnest($1::text[], $2::int8[], $3::int8[]) AS k(projector, epoch, applied) USING (projector)
				WHERE c.leader_node IS DISTINCT FROM $4 AND c.epoch > k.epoch AND c.events_applied > k.applied`,
				led, epochs, applied, victim).Scan(&n)
			return err == nil && n == len(led)
		})
		t.Logf("round %d: killed %s, which led %d projectors (%d slow); each committed a batch under a survivor within %s",
			round+1, victim, len(led), countSlow(ps, led), time.Since(fault).Round(time.Millisecond))
		e.writeMore(1000)
		if round+1 < rounds() {
			e.start(r)
			e.waitReady(r)
		}
	}

	close(e.writerStop)
	<-e.writerDone
	// The premise: the slow projectors were behind the tail when writing
	// stopped (the others' lag is logged, to compare ways of reading).
	var fastLag []int
	for _, p := range ps {
		n := e.lag(p)
		if p.slow {
			require.Positive(t, n, "%s, a slow projector, kept up with the writers: the test lost its premise", p.name)
			t.Logf("%s (slow; %s): %d events behind when the writers stopped", p.name, p.describe(), n)
		} else {
			fastLag = append(fastLag, n)
		}
	}
	slices.Sort(fastLag)
	t.Logf("the other %d were behind by %d events (median), %d (most)", len(fastLag), fastLag[len(fastLag)/2], fastLag[len(fastLag)-1])

	caughtUp := time.Now()
	for _, p := range ps {
		testsupport.Until(t, p.name+" caught up", time.Duration(2+rounds())*time.Minute, func() bool {
			var halted bool
			var lastErr string
			require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT halted_at IS NOT NULL OR status = 'halted', coalesce(last_error, '')
				FROM projectord.checkpoints WHERE projector = $1`, p.name).Scan(&halted, &lastErr))
			if halted {
				t.Fatalf("%s halted: %s", p.name, lastErr)
			}
			return e.lag(p) == 0
		})
	}
	t.Logf("every projector caught up %s after the writers stopped", time.Since(caughtUp).Round(time.Millisecond))

	var all int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT count(*) FROM events`).Scan(&all))
	for _, p := range ps {
		var missing, extra, dup, want int
		require.NoError(t, e.pool.QueryRow(e.ctx, fmt.Sprintf(`
			WITH want AS (SELECT e.global_position, e.stream_id, e.event_type FROM events e WHERE `+filterSQL+`)
			SELECT (SELECT count(*) FROM want w WHERE NOT EXISTS (SELECT 1 FROM %[1]s r WHERE r.position = w.global_position)),
			       (SELECT count(*) FROM %[1]s r WHERE NOT EXISTS (SELECT 1 FROM want w
			            WHERE w.global_position = r.position AND w.stream_id = r.stream_id AND w.event_type = r.event_type)),
			       (SELECT count(*) FROM %[1]s WHERE applied <> 1),
			       (SELECT count(*) FROM want)`, pgx.Identifier{p.table}.Sanitize()), p.eventTypes, p.streamPrefix).
			Scan(&missing, &extra, &dup, &want))
		require.Zero(t, missing, "%s: events it reads never applied", p.name)
		require.Zero(t, extra, "%s: rows for events that do not exist or that its filter excludes", p.name)
		require.Zero(t, dup, "%s: events applied twice", p.name)
		require.Positive(t, want, "%s: its filter selects nothing", p.name)
		if p.eventTypes != nil || p.streamPrefix != "" {
			require.Less(t, want, all, "%s: its filter selects every event, so it tests no filtering", p.name)
		}
	}
	var halted, dead int
	require.NoError(t, e.pool.QueryRow(e.ctx, `SELECT (SELECT count(*) FROM projectord.checkpoints WHERE halted_at IS NOT NULL OR status = 'halted'),
		(SELECT count(*) FROM projectord.dead_letters)`).Scan(&halted, &dead))
	require.Zero(t, halted, "halted projectors")
	require.Zero(t, dead, "dead letters")
	samples := e.checkSamples()
	t.Logf("%d events (%d written by this test's count), each read model equal to its oracle across %d projectors; %d metrics samples of 3 replicas, none with two leaders",
		all, e.written, len(ps), samples)
}

// busiest returns the replica that leads the most projectors in the latest
// sample (of two alike, the one leading more slow ones, whose takeover
// happens mid-batch more often) and the projectors it leads.
func (e *env) busiest(ps []sharedProjector) (string, []string) {
	led := e.ledNow()
	var victim string
	var projectors []string
	for _, node := range []string{"node-1", "node-2", "node-3"} {
		rows, err := e.pool.Query(e.ctx, `SELECT projector FROM projectord.checkpoints WHERE leader_node = $1 ORDER BY 1`, node)
		require.NoError(e.t, err)
		mine, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(e.t, err)
		if victim == "" || led[node] > led[victim] || led[node] == led[victim] && countSlow(ps, mine) > countSlow(ps, projectors) {
			victim, projectors = node, mine
		}
	}
	require.NotEmpty(e.t, projectors, "%s leads nothing", victim)
	return victim, projectors
}

func countSlow(ps []sharedProjector, names []string) int {
	n := 0
	for _, p := range ps {
		for _, name := range names {
			if p.slow && p.name == name {
				n++
			}
		}
	}
	return n
}
