package bench

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
)

// pgxCatchUp is the catch-up baseline: keyset pagination over the whole
// table with plain pgx, scanning every row into a store.Event.
func pgxCatchUp(ctx context.Context, pool *pgxpool.Pool, batch int) (int, error) {
	buf := make([]store.Event, 0, batch)
	var after store.Cursor
	n := 0
	for {
		var err error
		buf, err = readBatch(ctx, pool, after, batch, buf)
		if err != nil {
			return n, err
		}
		if len(buf) == 0 {
			return n, nil
		}
		n += len(buf)
		after = buf[len(buf)-1].Cursor
	}
}

// BenchmarkCatchUpNoopSink measures reading a backlog with a sink that has
// no handlers, so every batch only moves the checkpoint: the cost of the
// gap-safe reader and the commit loop against a bare keyset read.
func BenchmarkCatchUpNoopSink(b *testing.B) {
	if *flagEvents%5 != 0 || *flagEvents <= 0 {
		b.Fatalf("-bench.events must be a positive multiple of 5, got %d", *flagEvents)
	}
	db := newBenchDB(b)
	last, events := db.loadOrders(b, *flagEvents/5, 10)
	if events != *flagEvents {
		b.Fatalf("loaded %d events, want %d", events, *flagEvents)
	}
	sink, err := store.CompileSQLSink(map[string]string{}, "")
	if err != nil {
		b.Fatal(err)
	}
	p := db.startProjectord(b, projectordOptions{})
	// One untimed pass, so that the first timed side does not pay for
	// bringing the table into the caches.
	if n, err := pgxCatchUp(b.Context(), db.pool, 1000); err != nil || n != events {
		b.Fatalf("warm-up read %d of %d events: %v", n, events, err)
	}
	for _, batch := range []int{1000, 500} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			baseline := func(int) measurement {
				m, err := measure(b.Context(), labelPGX, func(ctx context.Context) (int, error) { return pgxCatchUp(ctx, db.pool, batch) })
				if err != nil || m.events != events {
					b.Fatalf("pgx read %d of %d events: %v", m.events, events, err)
				}
				return m
			}
			proj := func(r int) measurement {
				name := fmt.Sprintf("noop-%d-%d", batch, r)
				m := p.measureCatchUp(b, name, batch, sink, last, events)
				cp, ok, err := store.NewTarget(db.pool, setupTimeout).Load(b.Context(), name)
				// A sink with no handlers applies nothing: the runner passes
				// over the events and only moves the checkpoint.
				if err != nil || !ok || cp.Cursor != last || cp.EventsApplied != 0 {
					b.Fatalf("projector %s: checkpoint %+v (found %v, err %v), want cursor %s and no events applied", name, cp, ok, err, last)
				}
				return m
			}
			res := rounds(b, "pgx", "projectord", baseline, proj)
			reportRatio(b, "catch-up, no-op sink", fmt.Sprintf("(%d events)", events), batch, 0.85, res)
		})
	}
}
