package runner_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// flakySource fails a share of its reads and can be told to fail none.
type flakySource struct {
	src  runner.TailSource
	mu   sync.Mutex
	rng  *rand.Rand
	off  atomic.Bool
	errs atomic.Int64
}

var errFlaky = errors.New("flaky")

func (s *flakySource) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	s.mu.Lock()
	fail := !s.off.Load() && s.rng.IntN(8) == 0
	s.mu.Unlock()
	if fail {
		s.errs.Add(1)
		return buf[:0], errFlaky
	}
	return s.src.Read(ctx, after, f, limit, buf)
}

// Readers that move their cursors the way the loop does after a retry (back
// to a persisted cursor), a reset (further back) or another replica's
// progress (forward to a cursor up to which everything was read), under
// failing shared reads, cancelled reads and gap-making writers, on a
// window smaller than a burst: from their last move on, each gets exactly
// what a reader of its own gets.
func TestTailAdversarialCursorMoves(t *testing.T) {
	for round := range 4 {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			m := memtest.New()
			n := m.Node("a")
			writeGappy(m, 2, 10, uint64(round)+200)
			src := &flakySource{src: n, rng: rand.New(rand.NewPCG(uint64(round), 1))}
			var counts tailCounts
			// Odd rounds: a roomier window and rarer moves, so that more
			// reads are served from it.
			capacity, moveEvery := 6, 12
			if round%2 == 1 {
				capacity, moveEvery = 24, 80
			}
			tail := runner.NewTail(runner.TailConfig{Source: src, Heads: n.Head, Context: t.Context(), Limit: 4, Capacity: capacity, Observe: counts.observe})
			filters := []store.Filter{{}, {EventTypes: []string{"A"}}, {EventTypes: []string{"nothing"}}, {StreamPrefix: "order-1"}, {EventTypes: []string{"B", "D"}}}
			// progress holds, per filter, cursors up to which a reader of it
			// read everything: where "another replica" moves a reader.
			var pmu sync.Mutex
			progress := map[int][]store.Cursor{}
			stop := make(chan struct{})
			type result struct {
				from store.Cursor
				got  []store.Event
				err  error
			}
			results := make([]result, 3*len(filters))
			var wg sync.WaitGroup
			for i := range results {
				fi := i % len(filters)
				f := filters[fi]
				limit := 1 + i%4
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(round), uint64(i)+10))
					res := &results[i]
					cur := store.Cursor{}
					if i%2 == 1 {
						cur, _ = n.Head()
					}
					res.from = cur
					persisted := cur
					buf := make([]store.Event, 0, limit)
					for {
						head, changed := n.Head()
						ctx, cancel := context.WithCancel(t.Context())
						if rng.IntN(20) == 0 {
							cancel() // a stop, or a lease lost, during the read
						}
						events, err := tail.Read(ctx, cur, f, limit, buf)
						cancel()
						if err != nil {
							if !errors.Is(err, errFlaky) && !errors.Is(err, context.Canceled) {
								res.err = err
								return
							}
							continue
						}
						res.got = append(res.got, events...)
						to := cur
						if len(events) > 0 {
							to = events[len(events)-1].Cursor
						}
						full := len(events) == limit
						if !full && to.Less(head) {
							to = head
						}
						cur = to
						moves := moveEvery
						select {
						case <-stop:
							// Writers are done: no more moves, so every
							// reader reaches the final head.
							moves = 1 << 30
						default:
						}
						switch r := rng.IntN(moves); {
						case r == 0:
							// A retry: back to the persisted cursor.
							cur, res.from, res.got = persisted, persisted, nil
						case r == 1:
							// A reset: back to zero.
							cur, res.from, res.got = store.Cursor{}, store.Cursor{}, nil
						case r == 2:
							// Another replica's progress on this filter.
							pmu.Lock()
							ps := progress[fi]
							var p store.Cursor
							if len(ps) > 0 {
								p = ps[rng.IntN(len(ps))]
							}
							pmu.Unlock()
							if cur.Less(p) {
								cur, res.from, res.got = p, p, nil
							}
						case r < 6:
							persisted = cur
						}
						pmu.Lock()
						progress[fi] = append(progress[fi], cur)
						pmu.Unlock()
						if full || cur.Less(head) {
							continue
						}
						select {
						case <-changed:
						case <-stop:
							if h, _ := n.Head(); !cur.Less(h) {
								return
							}
						}
					}
				})
			}
			writeGappy(m, 4, 40, uint64(round))
			src.off.Store(true) // so that every reader reaches the final head
			close(stop)
			wg.Wait()
			for i, res := range results {
				require.NoError(t, res.err)
				var want []store.Event
				for _, e := range oracle(t, n, filters[i%len(filters)]) {
					if res.from.Less(e.Cursor) {
						want = append(want, e)
					}
				}
				require.Equal(t, cursors(want), cursors(res.got), "reader %d (filter %+v) from %s", i, filters[i%len(filters)], res.from)
			}
			t.Logf("reads: served %d, own %d, shared %d; %d failed", counts.served.Load(), counts.own.Load(), counts.shared.Load(), src.errs.Load())
			require.Positive(t, counts.served.Load(), "no read was served from the window: the test tested none of it")
			require.Positive(t, src.errs.Load(), "no shared or own read failed: the test tested no failure")
		})
	}
}
