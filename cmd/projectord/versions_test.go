package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/pgtest"
)

// Tests of issue #18, rebuild without downtime: version 2 of a projector is
// built beside version 1 under load, promoted with a view switch, and
// version 1 stops on every replica.

const rebuildAccounts = 40

type rebuildBundle struct {
	ctx  context.Context
	url  string
	pool *pgxpool.Pool
}

func newRebuild(t *testing.T) *rebuildBundle {
	t.Helper()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `CREATE TABLE events (
		global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
		stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL,
		data jsonb NOT NULL, metadata jsonb, created_at timestamptz NOT NULL DEFAULT now());
		CREATE INDEX ON events (transaction_id, global_position);
		CREATE TABLE retire_log (at timestamptz NOT NULL DEFAULT now(), by_version int NOT NULL);
		INSERT INTO events (stream_id, stream_version, event_type, data)
		SELECT 'acct-' || (g % 40), g, 'Dep', jsonb_build_object('acct', 'a' || (g % 40), 'amt', g % 7 + 1)
		FROM generate_series(1, 60000) g`)
	require.NoError(t, err)
	return &rebuildBundle{ctx: ctx, url: url, pool: pool}
}

// config is node's configuration with version v of projector acct. The two
// versions are different read models (v2 keeps cents and the last
// position) behind the same view, acct_view, with the same columns.
func (rb *rebuildBundle) config(t *testing.T, node string, v int) string {
	t.Helper()
	return rb.configHTTP(t, node, v, 0)
}

// configHTTP is config with HTTP on port (none for 0).
func (rb *rebuildBundle) configHTTP(t *testing.T, node string, v, port int) string {
	t.Helper()
	listen := `""`
	if port != 0 {
		listen = fmt.Sprintf(`"127.0.0.1:%d"`, port)
	}
	sink := `
        setup: CREATE TABLE IF NOT EXISTS acct_v1 (acct text PRIMARY KEY, total numeric NOT NULL, n bigint NOT NULL)
        handlers:
          Dep: >-
            INSERT INTO acct_v1 (acct, total, n) VALUES (@data->>'acct', (@data->>'amt')::numeric, 1)
            ON CONFLICT (acct) DO UPDATE SET total = acct_v1.total + excluded.total, n = acct_v1.n + 1
        promote: CREATE OR REPLACE VIEW acct_view AS SELECT acct, total, n FROM acct_v1`
	if v == 2 {
		sink = `
        setup: CREATE TABLE IF NOT EXISTS acct_v2 (acct text PRIMARY KEY, cents bigint NOT NULL, n bigint NOT NULL, last_position bigint NOT NULL)
        handlers:
          Dep: >-
            INSERT INTO acct_v2 (acct, cents, n, last_position) VALUES (@data->>'acct', (@data->>'amt')::bigint * 100, 1, @position)
            ON CONFLICT (acct) DO UPDATE SET cents = acct_v2.cents + excluded.cents, n = acct_v2.n + 1, last_position = excluded.last_position
        promote: CREATE OR REPLACE VIEW acct_view AS SELECT acct, (cents / 100.0)::numeric AS total, n FROM acct_v2
        retire: INSERT INTO retire_log (by_version) VALUES (2)`
	}
	return writeFile(t, fmt.Sprintf("%s-v%d.yaml", node, v), fmt.Sprintf(`
database: {url: '%s'}
coordination: {node_id: %s, acquire_interval: 200ms, heartbeat_interval: 200ms, lease_timeout: 3s}
source: {poll_interval: 20ms}
metrics: {refresh_interval: 100ms}
http: {listen: %s}
shutdown_timeout: 5s
log: {level: info}
projectors:
  - name: acct
    version: %d
    batch_size: 200
    sink:
      sql:%s
`, rb.url, node, listen, v, sink))
}

// writers append deposits from n goroutines until stop is closed.
func (rb *rebuildBundle) writers(t *testing.T, n int, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 18))
			tick := time.NewTicker(8 * time.Millisecond) // pacing the load, not synchronising
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				a := rng.IntN(rebuildAccounts)
				_, err := rb.pool.Exec(context.Background(), `INSERT INTO events (stream_id, stream_version, event_type, data)
					VALUES ($1, 0, 'Dep', jsonb_build_object('acct', $2::text, 'amt', $3::int))`,
					fmt.Sprintf("acct-%d", a), fmt.Sprintf("a%d", a), rng.IntN(7)+1)
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		}()
	}
	return &wg
}

// sample is what a reader saw in the view: the total of each account (in
// units) and how many events had been applied.
type sample struct {
	totals map[string]int64
	n      int64
}

func (rb *rebuildBundle) read(ctx context.Context, query string) (sample, error) {
	rows, err := rb.pool.Query(ctx, query)
	if err != nil {
		return sample{}, err
	}
	s := sample{totals: map[string]int64{}}
	var acct string
	var total, n int64
	_, err = pgx.ForEachRow(rows, []any{&acct, &total, &n}, func() error {
		s.totals[acct] = total
		s.n += n
		return nil
	})
	return s, err
}

// oracle returns, for each count k of events applied in cursor order, the
// totals a correct read model holds (only at the ks asked for).
func (rb *rebuildBundle) oracle(t *testing.T, ks []int64) map[int64]map[string]int64 {
	t.Helper()
	sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
	rows, err := rb.pool.Query(rb.ctx, `SELECT data->>'acct', (data->>'amt')::bigint FROM events ORDER BY transaction_id, global_position`)
	require.NoError(t, err)
	out := map[int64]map[string]int64{}
	cur := map[string]int64{}
	snap := func(k int64) {
		m := make(map[string]int64, len(cur))
		for a, v := range cur {
			m[a] = v
		}
		out[k] = m
	}
	var k int64
	i := 0
	for i < len(ks) && ks[i] == 0 {
		snap(0)
		i++
	}
	var acct string
	var amt int64
	_, err = pgx.ForEachRow(rows, []any{&acct, &amt}, func() error {
		cur[acct] += amt
		k++
		for i < len(ks) && ks[i] == k {
			snap(k)
			i++
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

func (rb *rebuildBundle) live(t *testing.T) (version int, promoted bool) {
	t.Helper()
	err := rb.pool.QueryRow(rb.ctx, `SELECT l.version, v.promoted_at IS NOT NULL FROM projectord.live_versions l
		JOIN projectord.projector_versions v ON v.name = l.name AND v.version = l.version WHERE l.name = 'acct'`).Scan(&version, &promoted)
	if err != nil {
		return 0, false
	}
	return version, promoted
}

func (rb *rebuildBundle) table(t *testing.T, q string) map[string]int64 {
	t.Helper()
	s, err := rb.read(rb.ctx, q)
	require.NoError(t, err)
	return s.totals
}

func (rb *rebuildBundle) restart(t *testing.T, p *proc, cfg string) *proc {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, p.wait(t, 20*time.Second), "SIGTERM exits 0")
	return startProc(t, "run", "--config", cfg)
}

const viewQuery = `SELECT acct, (total * 100)::bigint / 100, n FROM acct_view`

// TestRebuildUnderLoad is issue #18's "Rebuild under load".
func TestRebuildUnderLoad(t *testing.T) {
	rb := newRebuild(t)
	a := startProc(t, "run", "--config", rb.config(t, "a", 1))
	b := startProc(t, "run", "--config", rb.config(t, "b", 1))
	stop := make(chan struct{})
	wg := rb.writers(t, 8, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitFor(t, 2*time.Minute, func() bool { v, p := rb.live(t); return v == 1 && p })

	// The reader: every 10 ms, the view as one statement.
	var samples []sample
	var readErrs []error
	readerStop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-readerStop:
				return
			case <-tick.C:
			}
			s, err := rb.read(context.Background(), viewQuery)
			if err != nil {
				readErrs = append(readErrs, err)
				continue
			}
			samples = append(samples, s)
		}
	}()

	// One by one: a restarts with version 2 and builds it beside version
	// 1, which b leads live meanwhile; b follows once 2 is promoted.
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	a = rb.restart(t, a, rb.configHTTP(t, "a", 2, port))
	restarted := time.Now()
	// While version 2 builds, its replica's metrics show both versions;
	// an estimate of the time to catch up needs two refreshes of progress,
	// which a fast build may not leave room for: logged, not required.
	var building []string
	waitFor(t, 3*time.Minute, func() bool {
		if m, err := scrape(base); err == nil {
			if eta, ok := m[series("projector_version_catch_up_seconds", "acct", `version="2"`)]; ok {
				if b := fmt.Sprintf("lag %.0f, catch-up %.2fs", m[series("projector_version_lag_events", "acct", `version="2"`)], eta); len(building) == 0 || building[len(building)-1] != b {
					building = append(building, b)
				}
			}
		}
		v, p := rb.live(t)
		return v == 2 && p
	})
	if len(building) > 4 {
		building = append(building[:2], append([]string{"…"}, building[len(building)-2:]...)...)
	}
	t.Logf("version 2 promoted %s after its replica started; while building, its metrics said: %v",
		time.Since(restarted).Round(100*time.Millisecond), building)
	v1AtPromotion := rb.table(t, `SELECT acct, total::bigint, n FROM acct_v1`)
	waitFor(t, time.Minute, func() bool {
		m, err := scrape(base)
		return err == nil && m[series("projector_version_live", "acct", `version="2"`)] == 1 &&
			m[series("projector_version_live", "acct", `version="1"`)] == 0
	})
	waitFor(t, time.Minute, func() bool {
		code, body := get(base + "/status")
		var st struct {
			Versions []struct {
				Version int    `json:"version"`
				State   string `json:"state"`
			} `json:"versions"`
		}
		return code == 200 && json.Unmarshal([]byte(body), &st) == nil && len(st.Versions) == 2 &&
			st.Versions[0].State == "retired" && st.Versions[1].State == "live"
	})
	// b, still configured with version 1, stops it.
	waitFor(t, time.Minute, func() bool { return strings.Contains(b.out.String(), "projector version is superseded") })
	b = rb.restart(t, b, rb.config(t, "b", 2))
	waitFor(t, time.Minute, func() bool {
		var n int
		return rb.pool.QueryRow(rb.ctx, `SELECT count(*) FROM projectord.nodes`).Scan(&n) == nil && n == 2
	})
	close(stop)
	wg.Wait()
	var events int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT count(*) FROM events`).Scan(&events))
	waitFor(t, 2*time.Minute, func() bool {
		var n int64
		return rb.pool.QueryRow(rb.ctx, `SELECT events_applied FROM projectord.checkpoints WHERE projector = 'acct@v2'`).Scan(&n) == nil && n == events
	})
	close(readerStop)
	<-readerDone
	final, err := rb.read(rb.ctx, viewQuery)
	require.NoError(t, err)
	samples = append(samples, final)

	require.Empty(t, readErrs, "the reader never sees an error")
	ks := make([]int64, 0, len(samples))
	for _, s := range samples {
		ks = append(ks, s.n)
	}
	ks = append(ks, events)
	oracle := rb.oracle(t, ks)
	for i, s := range samples {
		require.Equal(t, oracle[s.n], s.totals, "sample %d (%d events applied) is the oracle at that checkpoint", i, s.n)
		if i > 0 {
			// The switch waits until version 2 is at least where version 1
			// was: readers never go back in time.
			require.GreaterOrEqual(t, s.n, samples[i-1].n, "sample %d went back in time", i)
		}
	}
	require.Equal(t, oracle[events], rb.table(t, `SELECT acct, cents / 100, n FROM acct_v2`), "version 2 equals the oracle")
	require.Equal(t, oracle[events], rb.table(t, viewQuery), "the view shows version 2")
	require.Equal(t, v1AtPromotion, rb.table(t, `SELECT acct, total::bigint, n FROM acct_v1`), "version 1's table no longer changes")
	var v1Events, v1Applied int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT sum(n) FROM acct_v1`).Scan(&v1Events))
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT events_applied FROM projectord.checkpoints WHERE projector = 'acct'`).Scan(&v1Applied))
	require.Equal(t, v1Applied, v1Events, "version 1's table is its checkpoint's")
	require.Less(t, v1Events, events, "version 1 stopped before the writers did")
	var retired int
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT count(*) FROM retire_log`).Scan(&retired))
	require.Equal(t, 1, retired, "retire ran exactly once")
	first, last := samples[0].n, samples[len(samples)-1].n
	require.Less(t, first, v1Events, "the reader sampled version 1")
	require.Equal(t, events, last, "and version 2 at the end")
	t.Logf("%d samples, none failed, each the oracle at its checkpoint (%d to %d events); %d events in all; version 1 stopped at %d",
		len(samples), first, last, events, v1Events)
	require.Greater(t, len(samples), 100)

	for _, p := range []*proc{a, b} {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, p.wait(t, 20*time.Second))
	}
}

// TestRollingDeployOldReplicaNeverLeadsVersion1Again is issue #18's "A
// rolling deploy where one replica still has version 1 after promotion":
// it stops version 1 when version 2 is promoted, and a restart of it (still
// with version 1) never takes version 1's lock, even when it is the only
// replica left.
func TestRollingDeployOldReplicaNeverLeadsVersion1Again(t *testing.T) {
	rb := newRebuild(t)
	a := startProc(t, "run", "--config", rb.config(t, "a", 1))
	b := startProc(t, "run", "--config", rb.config(t, "b", 1))
	stop := make(chan struct{})
	wg := rb.writers(t, 8, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitFor(t, 2*time.Minute, func() bool { v, p := rb.live(t); return v == 1 && p })

	// Who holds version 1's lock, sampled from here to the end.
	var mu sync.Mutex
	holders := map[string]int{}
	samplerStop, samplerDone := make(chan struct{}), make(chan struct{})
	var promotedAt time.Time
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-samplerStop:
				return
			case <-tick.C:
			}
			var node string
			err := rb.pool.QueryRow(context.Background(), `SELECT n.node_id FROM pg_locks l
				JOIN projectord.projectors p ON p.id = l.objid::int AND p.name = 'acct'
				JOIN projectord.nodes n ON n.backend_pid = l.pid
				WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.granted`).Scan(&node)
			mu.Lock()
			if err == nil && !promotedAt.IsZero() {
				holders[node]++
			}
			mu.Unlock()
		}
	}()

	a = rb.restart(t, a, rb.config(t, "a", 2))
	waitFor(t, 3*time.Minute, func() bool { v, p := rb.live(t); return v == 2 && p })
	// From here on, nobody may hold version 1's lock once the old leader
	// has stepped down.
	waitFor(t, time.Minute, func() bool { return strings.Contains(b.out.String(), "projector version is superseded") })
	var epoch int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT epoch FROM projectord.checkpoints WHERE projector = 'acct'`).Scan(&epoch))
	v1 := rb.table(t, `SELECT acct, total::bigint, n FROM acct_v1`)
	mu.Lock()
	promotedAt = time.Now()
	mu.Unlock()

	// b restarts, still with version 1; then a, the only replica with
	// version 2, goes away: b still does not run version 1.
	b = rb.restart(t, b, rb.config(t, "b", 1))
	waitFor(t, time.Minute, func() bool { return strings.Contains(b.out.String(), "projector version is superseded") })
	require.NoError(t, a.cmd.Process.Kill())
	<-a.exited
	// Every acquire tick of b meets the superseded version again: wait for
	// the writers' events to pile up behind version 2's checkpoint, so a
	// b that wrongly ran version 1 would have had time to lead it.
	var at int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT count(*) FROM events`).Scan(&at))
	waitFor(t, time.Minute, func() bool {
		var n int64
		return rb.pool.QueryRow(rb.ctx, `SELECT count(*) FROM events`).Scan(&n) == nil && n > at+2000
	})
	close(stop)
	wg.Wait()
	close(samplerStop)
	<-samplerDone

	require.Empty(t, holders, "nobody held version 1's lock after it was superseded")
	var after int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT epoch FROM projectord.checkpoints WHERE projector = 'acct'`).Scan(&after))
	require.Equal(t, epoch, after, "nobody claimed version 1 again")
	require.Equal(t, v1, rb.table(t, `SELECT acct, total::bigint, n FROM acct_v1`), "version 1's table no longer changes")
	code, out, errOut := cli(t, "status", "--config", rb.config(t, "b", 1))
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "superseded")
	t.Logf("status of the old replica's configuration:\n%s", out)
	// Every version, its state and its lag (the writers have stopped:
	// the truth holds still).
	code, js, errOut := cli(t, "status", "-o", "json", "--config", rb.config(t, "b", 1))
	require.Equal(t, 0, code, errOut)
	var doc struct {
		Versions []struct {
			Version   int    `json:"version"`
			State     string `json:"state"`
			Live      bool   `json:"live"`
			LagEvents int64  `json:"lag_events"`
		} `json:"versions"`
	}
	require.NoError(t, json.Unmarshal([]byte(js), &doc))
	require.Len(t, doc.Versions, 2)
	require.Equal(t, "retired", doc.Versions[0].State)
	require.Equal(t, "live", doc.Versions[1].State)
	require.True(t, doc.Versions[1].Live)
	var lag2 int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT count(*) FROM events e, projectord.checkpoints c
		WHERE c.projector = 'acct@v2' AND (e.transaction_id, e.global_position) > (c.last_xid, c.last_position)`).Scan(&lag2))
	require.Equal(t, lag2, doc.Versions[1].LagEvents, "version 2's lag (a, its only replica, was killed)")
	require.Positive(t, lag2)

	// a was killed after its retire committed; the next leader of version
	// 2 leads it from its checkpoint and does not retire again.
	c := startProc(t, "run", "--config", rb.config(t, "c", 2))
	waitFor(t, 2*time.Minute, func() bool {
		var n, events int64
		return rb.pool.QueryRow(rb.ctx, `SELECT c.events_applied, (SELECT count(*) FROM events) FROM projectord.checkpoints c
			WHERE c.projector = 'acct@v2'`).Scan(&n, &events) == nil && n == events
	})
	var retired int
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT count(*) FROM retire_log`).Scan(&retired))
	require.Equal(t, 1, retired, "retire ran exactly once, through a kill -9 and a new leader")
	for _, p := range []*proc{b, c} {
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, p.wait(t, 20*time.Second))
	}

	// `projectord reset` acts on the configured version's checkpoint.
	code, out, errOut = cli(t, "reset", "acct", "--yes", "--config", rb.config(t, "c", 2))
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "acct@v2 reset")
	var v2Pos, v1Pos int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT
		(SELECT last_position FROM projectord.checkpoints WHERE projector = 'acct@v2'),
		(SELECT last_position FROM projectord.checkpoints WHERE projector = 'acct')`).Scan(&v2Pos, &v1Pos))
	require.Zero(t, v2Pos)
	require.Positive(t, v1Pos, "version 1's checkpoint is untouched")

	// A reset from a configuration still on version 1 is refused: its reset
	// SQL predates the promotion. Exit 2 (the input to fix), nothing changed.
	code, _, errOut = cli(t, "reset", "acct", "--yes", "--config", rb.config(t, "c", 1))
	require.Equal(t, 2, code, errOut)
	require.Contains(t, errOut, "version 2 of acct is live")
	var v1After int64
	require.NoError(t, rb.pool.QueryRow(rb.ctx, `SELECT last_position FROM projectord.checkpoints WHERE projector = 'acct'`).Scan(&v1After))
	require.Equal(t, v1Pos, v1After, "the refused reset moved version 1's checkpoint")
}
