package bench

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/storeddl"
)

var flagPrepareRows = flag.Int("bench.prepare_rows", 1_000_000, "rows in each table of the source prepare benchmark")

// prepareCase is one table shape the prepare benchmark prepares.
type prepareCase struct {
	name string
	// load creates the table with rows and returns its source.
	load func(b *testing.B, db *benchDB, rows int) store.Source
	// write is one single-row insert by the store's own writers; $1 is a
	// number never used before.
	write  string
	notify bool
}

var prepareCases = []prepareCase{
	{
		name: "plain",
		load: func(b *testing.B, db *benchDB, rows int) store.Source {
			db.exec(b, `CREATE TABLE legacy (global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream_id text NOT NULL,
				stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
				created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (stream_id, stream_version))`)
			db.exec(b, `INSERT INTO legacy (stream_id, stream_version, event_type, data, metadata)
				SELECT 'order-' || (g % 200000), g / 200000 + 1, 'ItemAdded', jsonb_build_object('sku', 'sku-' || (g % 97), 'qty', g % 5),
					jsonb_build_object('correlation_id', md5(g::text))
				FROM generate_series(1, $1::int) g`, rows)
			return store.Source{Table: "public.legacy", Columns: store.NativeColumns, Ordering: store.OrderXID8}
		},
		write:  `INSERT INTO legacy (stream_id, stream_version, event_type, data) VALUES ('writer-' || $1::int, 1, 'W', '{}')`,
		notify: true,
	},
	{
		// Emmett's own schema; 90% of the rows in the default partition's
		// active leaf, 5% archived, 5% in a second partition.
		name: "partitioned",
		load: func(b *testing.B, db *benchDB, rows int) store.Source {
			db.exec(b, storeddl.Emmett)
			db.exec(b, `SELECT emt_add_partition('tenant_b')`)
			db.exec(b, `INSERT INTO emt_messages (stream_id, stream_position, partition, is_archived, message_data, message_metadata,
					message_schema_version, message_type, message_kind, message_id, transaction_id)
				SELECT 'account-' || (g % 200000), g / 200000 + 1, CASE WHEN g % 20 = 0 THEN 'tenant_b' ELSE 'emt:default' END, g % 20 = 1,
					jsonb_build_object('amount', g % 1000), '{}', '1', 'Deposited', 'E', 'm-' || g, pg_current_xact_id()
				FROM generate_series(1, $1::int) g`, rows)
			p := store.Presets["emmett"]
			return store.Source{Preset: "emmett", Table: p.Table, Columns: p.Columns, Ordering: store.OrderXID8}
		},
		write: `INSERT INTO emt_messages (stream_id, stream_position, message_data, message_metadata, message_schema_version,
			message_type, message_id, transaction_id) VALUES ('writer-' || $1::int, 1, '{}', '{}', '1', 'W', 'w-' || $1::int, pg_current_xact_id())`,
	},
	{
		// eventcore's own schema and triggers. The rows are loaded with
		// the triggers off (session_replication_role), as the version
		// trigger would make loading take minutes; the writer runs them.
		name: "eventcore",
		load: func(b *testing.B, db *benchDB, rows int) store.Source {
			db.exec(b, storeddl.EventCore)
			ctx, cancel := context.WithTimeout(b.Context(), setupTimeout)
			defer cancel()
			err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
					return err
				}
				// Time-ordered ids, as eventcore's uuid v7 are.
				_, err := tx.Exec(ctx, `INSERT INTO eventcore_events (event_id, stream_id, stream_version, event_type, event_data, metadata)
					SELECT (lpad(to_hex(g), 12, '0') || '7' || substr(md5(g::text), 1, 19))::uuid, 'account-' || (g % 200000), g / 200000 + 1,
						'Deposited', jsonb_build_object('amount', g % 1000), jsonb_build_object('correlation_id', md5(g::text))
					FROM generate_series(1, $1::int) g`, rows)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			p := store.Presets["eventcore"]
			return store.Source{Preset: "eventcore", Table: p.Table, Columns: p.Columns, Ordering: store.OrderXID8}
		},
		write: `INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data) VALUES (gen_random_uuid(), 'writer-' || $1::int, 'W', '{}')`,
	},
}

// stepKind names a prepare step for the metrics and the summary.
func stepKind(s store.PrepareStep) string {
	switch {
	case strings.Contains(s.SQL, " xid8 NOT NULL DEFAULT '1'"):
		return "xid8_column"
	case strings.Contains(s.SQL, "GENERATED ALWAYS AS IDENTITY"):
		return "identity_position"
	case strings.Contains(s.SQL, " ON ONLY "):
		return "on_only_index"
	case s.Concurrent:
		return "concurrent_build"
	case strings.Contains(s.SQL, "ATTACH PARTITION"):
		return "attach"
	case strings.Contains(s.SQL, "CREATE TRIGGER"):
		return "notify_trigger"
	case strings.Contains(s.SQL, "FUNCTION"):
		return "notify_function"
	}
	return "other"
}

// insertLog records a writer's inserts, so that each step can be charged
// with the longest insert that overlapped it.
type insertLog struct {
	mu      sync.Mutex
	inserts []insertSpan
	err     error
}

type insertSpan struct{ start, end time.Time }

func (l *insertLog) add(s insertSpan) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inserts = append(l.inserts, s)
}

// startedAfter reports whether an insert that started after t has
// finished: every insert overlapping a window ending at t has then been
// recorded.
func (l *insertLog) startedAfter(t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err != nil || len(l.inserts) > 0 && l.inserts[len(l.inserts)-1].start.After(t)
}

// longest returns the longest insert overlapping [from, to] and how many
// there were.
func (l *insertLog) longest(from, to time.Time) (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var longest time.Duration
	n := 0
	for _, s := range l.inserts {
		if s.end.Before(from) || s.start.After(to) {
			continue
		}
		n++
		longest = max(longest, s.end.Sub(s.start))
	}
	return longest, n
}

const prepareTitle = "What source prepare locks, and for how long"

var prepareHeader = []string{"table", "step", "kind", "locks (strongest per relation)", "took", "longest insert", "inserts"}

func prepareNote(rows int) string {
	return fmt.Sprintf("Each step of `source prepare --apply` on a table of %d rows (VACUUM ANALYZEd), in plan order, while one writer "+
		"inserted a row per transaction; \"longest insert\" is the longest of the writer's inserts that overlapped the step, "+
		"\"inserts\" how many did. One run: absolute times on a shared machine are indicative.", rows)
}

// BenchmarkPrepare1M measures each statement of `source prepare` on
// tables of -bench.prepare_rows rows (1M): a plain table without the xid8
// column (with --notify), Emmett's partitioned emt_messages, and
// eventcore's table, which also gets its position by a rewrite. Meanwhile
// one writer inserts a row per transaction, as the store's writers do, and
// each step reports the longest of those inserts that overlapped it: what
// the step cost writers. Steps run as --apply runs them, without a lock
// timeout (the writer's transactions are short). docs/sources.md quotes
// the figures.
func BenchmarkPrepare1M(b *testing.B) {
	rows := *flagPrepareRows
	for _, c := range prepareCases {
		b.Run(c.name, func(b *testing.B) {
			db := newBenchDB(b)
			src := c.load(b, db, rows)
			db.exec(b, `VACUUM ANALYZE`)
			ctx := b.Context()
			src, err := src.Resolve(ctx, db.pool)
			if err != nil {
				b.Fatal(err)
			}
			steps, err := store.PlanPrepare(ctx, db.pool, src, c.notify, "bench_prepare")
			if err != nil {
				b.Fatal(err)
			}

			conn, err := pgx.Connect(ctx, db.url)
			if err != nil {
				b.Fatal(err)
			}
			wctx, stop := context.WithCancel(ctx)
			log := &insertLog{}
			writerDone := make(chan struct{})
			go func() {
				defer close(writerDone)
				for i := 0; wctx.Err() == nil; i++ {
					start := time.Now()
					if _, err := conn.Exec(wctx, c.write, i); err != nil {
						if wctx.Err() == nil {
							log.mu.Lock()
							log.err = err
							log.mu.Unlock()
						}
						return
					}
					log.add(insertSpan{start, time.Now()})
				}
			}()
			defer func() {
				stop()
				<-writerDone
				_ = conn.Close(context.WithoutCancel(ctx))
			}()
			// The writer alone first: what an insert costs without prepare.
			const alone = 200
			waitFor(b, "the writer's first inserts", time.Minute, func() bool {
				log.mu.Lock()
				defer log.mu.Unlock()
				return log.err != nil || len(log.inserts) >= alone
			})
			log.mu.Lock()
			var lat []time.Duration
			for _, s := range log.inserts[:min(alone, len(log.inserts))] {
				lat = append(lat, s.end.Sub(s.start))
			}
			log.mu.Unlock()
			slices.Sort(lat)
			if len(lat) > 0 {
				summary.add(prepareTitle, prepareNote(rows), prepareHeader, c.name, "–", "(the writer alone, no step)", "",
					"", fmt.Sprintf("median %s, max %s", lat[len(lat)/2].Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond)),
					fmt.Sprint(len(lat)))
			}

			type total struct {
				took, longest time.Duration
				n             int
			}
			kinds := map[string]*total{}
			var order []string
			for i, s := range steps {
				start := time.Now()
				if err := store.ApplyPrepareStep(ctx, db.pool, s, 0); err != nil {
					b.Fatalf("step %d (%s): %v", i+1, s.SQL, err)
				}
				end := time.Now()
				waitFor(b, "an insert after the step", time.Minute, func() bool { return log.startedAfter(end) })
				longest, inserts := log.longest(start, end)
				k := stepKind(s)
				if kinds[k] == nil {
					kinds[k] = &total{}
					order = append(order, k)
				}
				kinds[k].took += end.Sub(start)
				kinds[k].longest = max(kinds[k].longest, longest)
				kinds[k].n++
				on := make([]string, 0, len(s.Holds))
				for _, h := range s.Holds {
					on = append(on, strings.TrimSuffix(h.Mode, "Lock")+" "+h.Name)
				}
				summary.add(prepareTitle, prepareNote(rows), prepareHeader, c.name, fmt.Sprint(i+1), k, strings.Join(on, ", "), end.Sub(start).Round(time.Millisecond).String(),
					longest.Round(100*time.Microsecond).String(), fmt.Sprint(inserts))
			}
			log.mu.Lock()
			werr := log.err
			log.mu.Unlock()
			if werr != nil {
				b.Fatalf("the writer failed: %v", werr)
			}
			if err := store.VerifyPrepared(ctx, db.pool, src, c.notify); err != nil {
				b.Fatal(err)
			}
			if again, err := store.PlanPrepare(ctx, db.pool, src, c.notify, "bench_prepare"); err != nil || len(again) > 0 {
				b.Fatalf("after prepare, still planned %d steps (%v)", len(again), err)
			}
			b.ReportMetric(0, "ns/op")
			slices.Sort(order)
			for _, k := range order {
				b.ReportMetric(kinds[k].took.Seconds(), k+"_s")
				b.ReportMetric(float64(kinds[k].longest)/float64(time.Millisecond), k+"_longest_insert_ms")
			}
		})
	}
}
