package daemon

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
)

// With shared reads, projectors at the live tail are served from one read
// per head change, each its own events: under writers committing out of
// order (and rolling back), every projector, whatever its filter, and one
// whose slow handler keeps it behind the others, applies exactly its
// events once; and the replica ran far fewer read queries than the
// projectors were served batches.
func TestPGSharedReadsServeEveryProjectorItsOwnEvents(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	type shape struct {
		types  []string
		prefix string
		slow   bool
	}
	shapes := []shape{
		{}, {types: []string{"A"}}, {types: []string{"B", "C"}}, {prefix: "order-"}, {prefix: "cart-", types: []string{"A"}},
		{types: []string{"C"}}, {prefix: "order-1"}, {types: []string{"nothing"}}, {types: []string{"B"}, slow: true}, {},
	}
	var projectors []config.Projector
	for i, s := range shapes {
		name := fmt.Sprintf("p%d", i)
		handler := fmt.Sprintf(`INSERT INTO applied (projector, position) VALUES ('%s', @position)`, name)
		if s.slow {
			// Slow enough to fall behind the writers, and the window.
			handler = fmt.Sprintf(`INSERT INTO applied (projector, position) SELECT '%s', @position FROM pg_sleep(0.005)`, name)
		}
		projectors = append(projectors, config.Projector{Name: name, EventTypes: s.types, StreamPrefix: s.prefix, BatchSize: 50,
			Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"*": handler}}}})
	}
	cfg := tb.config(t, projectors...)
	var served, own, shared atomic.Int64
	tb.startDaemonWith(t, cfg, "node-a", func(o *Options) {
		o.ObserveRead = func(r runner.TailRead) {
			switch r {
			case runner.TailServed:
				served.Add(1)
			case runner.TailOwn:
				own.Add(1)
			case runner.TailShared:
				shared.Add(1)
			}
		}
	})
	// Every projector is live before the writers start: the reads that
	// follow are at the tail.
	for _, p := range projectors {
		require.Eventually(t, func() bool { return tb.peek(p.Name).Epoch > 0 }, 30*time.Second, 5*time.Millisecond, "%s never led", p.Name)
	}

	const writers = 8
	wpool, err := pgxpool.NewWithConfig(tb.ctx, func() *pgxpool.Config {
		c, _ := pgxpool.ParseConfig(tb.url)
		c.MaxConns = writers
		return c
	}())
	require.NoError(t, err)
	defer wpool.Close()
	var wg sync.WaitGroup
	var rolledBack atomic.Int64
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 60 {
				err := pgx.BeginFunc(tb.ctx, wpool, func(tx pgx.Tx) error {
					stream := fmt.Sprintf("%s-%d-%d", []string{"order", "cart"}[rng.IntN(2)], w, i)
					if _, err := tx.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
						SELECT $1, g, (ARRAY['A','B','C'])[1 + (g % 3)], '{}' FROM generate_series(1, $2) g`, stream, 1+rng.IntN(5)); err != nil {
						return err
					}
					// Held open after its insert, so later transactions commit first.
					time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
					if rng.IntN(10) == 0 {
						return errRollback
					}
					return nil
				})
				if errors.Is(err, errRollback) {
					rolledBack.Add(1)
				} else if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.Positive(t, rolledBack.Load())
	names := make([]string, len(projectors))
	for i, p := range projectors {
		names[i] = p.Name
	}
	tb.waitCaughtUp(t, names...)
	for i, s := range shapes {
		var missing, extra, dup, want int
		err := tb.pool.QueryRow(tb.ctx, `
			WITH want AS (SELECT global_position AS position FROM events
			               WHERE (coalesce(cardinality($2::text[]), 0) = 0 OR event_type = ANY($2)) AND starts_with(stream_id, $3)),
			     got AS (SELECT position, count(*) AS n FROM applied WHERE projector = $1 GROUP BY position)
			SELECT (SELECT count(*) FROM want WHERE position NOT IN (SELECT position FROM got)),
			       (SELECT count(*) FROM got WHERE position NOT IN (SELECT position FROM want)),
			       (SELECT count(*) FROM got WHERE n > 1),
			       (SELECT count(*) FROM want)`, names[i], s.types, s.prefix).Scan(&missing, &extra, &dup, &want)
		require.NoError(t, err)
		require.Zero(t, missing, "%s: events never applied", names[i])
		require.Zero(t, extra, "%s: events applied that it does not read", names[i])
		require.Zero(t, dup, "%s: events applied twice", names[i])
		if len(s.types) == 0 || s.types[0] != "nothing" {
			require.Positive(t, want, "%s reads nothing: the test checks nothing for it", names[i])
		}
	}
	t.Logf("reads: %d served from the window, %d of their own, %d shared queries", served.Load(), own.Load(), shared.Load())
	// Shared queries include the watcher's polls while the window is in
	// use (Tail.Poll finds the head with the window's read), so they are
	// compared with the batches they served, not with head-free counts.
	require.Greater(t, served.Load(), 2*own.Load(), "most batches were not served from the window")
	require.Less(t, shared.Load(), served.Load(), "as many shared queries as batches served from them")
}
