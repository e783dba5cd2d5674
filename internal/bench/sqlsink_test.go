package bench

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
)

// readModelDDL is the orders read model both sides build. Autovacuum is off
// on it because every round truncates it anyway; it would otherwise run
// during whichever side happened to come next.
const readModelDDL = `
CREATE TABLE orders (
    order_id   text PRIMARY KEY,
    customer   text NOT NULL,
    channel    text NOT NULL,
    status     text NOT NULL,
    placed_at  timestamptz NOT NULL,
    shipped_at timestamptz,
    carrier    text,
    version    bigint NOT NULL
) WITH (autovacuum_enabled = off);
CREATE TABLE order_items (
    order_id   text NOT NULL,
    sku        text NOT NULL,
    qty        int NOT NULL,
    unit_price numeric(12,2) NOT NULL,
    PRIMARY KEY (order_id, sku)
) WITH (autovacuum_enabled = off);
CREATE TABLE pgx_checkpoint (
    projector     text PRIMARY KEY,
    last_xid      xid8 NOT NULL,
    last_position bigint NOT NULL,
    events        bigint NOT NULL,
    updated_at    timestamptz NOT NULL
);`

// The handlers, as a projectord config names them: named parameters, no casts.
var orderHandlers = map[string]string{
	"OrderPlaced": `INSERT INTO orders AS o (order_id, customer, channel, status, placed_at, version)
		VALUES (@data->>'order_id', @data->>'customer', @data->>'channel', 'placed', @created_at, @stream_version)
		ON CONFLICT (order_id) DO UPDATE SET customer = excluded.customer, channel = excluded.channel,
			status = excluded.status, placed_at = excluded.placed_at, version = excluded.version`,
	"ItemAdded": `INSERT INTO order_items AS i (order_id, sku, qty, unit_price)
		VALUES (@data->>'order_id', @data->>'sku', (@data->>'qty')::int, (@data->>'price')::numeric)
		ON CONFLICT (order_id, sku) DO UPDATE SET qty = i.qty + excluded.qty, unit_price = excluded.unit_price`,
	"OrderShipped": `UPDATE orders SET status = 'shipped', shipped_at = @created_at, carrier = @data->>'carrier',
		version = @stream_version
		WHERE order_id = @data->>'order_id'`,
}

// pgxStatement is one handler as a hand-written pgx loop has it: $n
// parameters with explicit casts, and the arguments taken from the event.
type pgxStatement struct {
	sql  string
	args func(e *store.Event) []any
}

var pgxHandlers = map[string]pgxStatement{
	"OrderPlaced": {`INSERT INTO orders AS o (order_id, customer, channel, status, placed_at, version)
		VALUES ($1::jsonb->>'order_id', $1::jsonb->>'customer', $1::jsonb->>'channel', 'placed', $2::timestamptz, $3::bigint)
		ON CONFLICT (order_id) DO UPDATE SET customer = excluded.customer, channel = excluded.channel,
			status = excluded.status, placed_at = excluded.placed_at, version = excluded.version`,
		func(e *store.Event) []any { return []any{e.Data, e.CreatedAt, e.StreamVersion} }},
	"ItemAdded": {`INSERT INTO order_items AS i (order_id, sku, qty, unit_price)
		VALUES ($1::jsonb->>'order_id', $1::jsonb->>'sku', ($1::jsonb->>'qty')::int, ($1::jsonb->>'price')::numeric)
		ON CONFLICT (order_id, sku) DO UPDATE SET qty = i.qty + excluded.qty, unit_price = excluded.unit_price`,
		func(e *store.Event) []any { return []any{e.Data} }},
	"OrderShipped": {`UPDATE orders SET status = 'shipped', shipped_at = $2::timestamptz, carrier = $1::jsonb->>'carrier',
		version = $3::bigint
		WHERE order_id = $1::jsonb->>'order_id'`,
		func(e *store.Event) []any { return []any{e.Data, e.CreatedAt, e.StreamVersion} }},
}

// pgxProject is the SQL sink baseline: the strongest plain-pgx loop we
// know. It reads a batch (keyset), then applies it in one pipelined round
// trip and one implicit transaction (pgx.Batch, a single Sync): one
// statement per event and, last, a checkpoint update guarded by the
// previous cursor — what projectord's Commit does, without the runner.
func pgxProject(ctx context.Context, pool *pgxpool.Pool, name string, batch int) (int, error) {
	if _, err := pool.Exec(ctx, `INSERT INTO pgx_checkpoint VALUES ($1, '0', 0, 0, now())
		ON CONFLICT (projector) DO UPDATE SET last_xid = '0', last_position = 0, events = 0, updated_at = now()`, name); err != nil {
		return 0, err
	}
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
		to := buf[len(buf)-1].Cursor
		b := &pgx.Batch{}
		for i := range buf {
			if st, ok := pgxHandlers[buf[i].Type]; ok {
				b.Queue(st.sql, st.args(&buf[i])...)
			}
		}
		b.Queue(`UPDATE pgx_checkpoint SET last_xid = $2::xid8, last_position = $3::bigint, events = events + $4::bigint, updated_at = now()
			WHERE projector = $1 AND last_xid = $5::xid8 AND last_position = $6::bigint`,
			name, to.XID, to.Position, len(buf), after.XID, after.Position)
		br := pool.SendBatch(ctx, b)
		for i := 0; i < b.Len(); i++ {
			tag, err := br.Exec()
			if err == nil && i == b.Len()-1 && tag.RowsAffected() != 1 {
				err = errors.New("checkpoint moved under us")
			}
			if err != nil {
				_ = br.Close()
				return n, err
			}
		}
		if err := br.Close(); err != nil {
			return n, err
		}
		n += len(buf)
		after = to
	}
}

// readModel summarises the read model: row counts and a digest of every row.
type readModel struct {
	orders, items, shipped int64
	qty                    int64
	digest                 string
}

func (db *benchDB) readModel(b *testing.B) readModel {
	b.Helper()
	var m readModel
	err := db.pool.QueryRow(b.Context(), `SELECT
		(SELECT count(*) FROM orders), (SELECT count(*) FROM order_items),
		(SELECT count(*) FROM orders WHERE status = 'shipped'), (SELECT coalesce(sum(qty), 0) FROM order_items),
		md5(coalesce((SELECT string_agg(concat_ws('|', order_id, customer, channel, status, placed_at, shipped_at, carrier, version), ',' ORDER BY order_id) FROM orders), '')
		 || coalesce((SELECT string_agg(concat_ws('|', order_id, sku, qty, unit_price), ',' ORDER BY order_id, sku) FROM order_items), ''))`,
	).Scan(&m.orders, &m.items, &m.shipped, &m.qty, &m.digest)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// oracle is what the read model must hold, computed from the events alone.
func (db *benchDB) oracle(b *testing.B) readModel {
	b.Helper()
	var m readModel
	err := db.pool.QueryRow(b.Context(), `SELECT
		count(*) FILTER (WHERE event_type = 'OrderPlaced'),
		(SELECT count(*) FROM (SELECT DISTINCT data->>'order_id', data->>'sku' FROM events WHERE event_type = 'ItemAdded') d),
		count(*) FILTER (WHERE event_type = 'OrderShipped'),
		coalesce(sum((data->>'qty')::int) FILTER (WHERE event_type = 'ItemAdded'), 0)
		FROM events`).Scan(&m.orders, &m.items, &m.shipped, &m.qty)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkCatchUpSQLSink measures catching up through a SQL sink with
// three upserting handlers against the hand-written pipelined pgx loop
// above, on the same events, and checks that both build the same read
// model, equal to the oracle.
func BenchmarkCatchUpSQLSink(b *testing.B) {
	if *flagOrders%5 != 0 || *flagOrders <= 0 {
		b.Fatalf("-bench.orders must be a positive multiple of 5, got %d", *flagOrders)
	}
	db := newBenchDB(b)
	db.exec(b, readModelDDL)
	last, events := db.loadOrders(b, *flagOrders, 10)
	sink, err := store.CompileSQLSink(orderHandlers, "")
	if err != nil {
		b.Fatal(err)
	}
	want := db.oracle(b)
	p := db.startProjectord(b, projectordOptions{})
	if _, err := pgxCatchUp(b.Context(), db.pool, 1000); err != nil { // warm the caches
		b.Fatal(err)
	}
	var digest string // the first side's read model; every other run must match it
	check := func(b *testing.B, side string) {
		got := db.readModel(b)
		if got.orders != want.orders || got.items != want.items || got.shipped != want.shipped || got.qty != want.qty {
			b.Fatalf("%s built a wrong read model: %+v, want %+v", side, got, want)
		}
		if digest == "" {
			digest = got.digest
		} else if got.digest != digest {
			b.Fatalf("%s built a read model with digest %s, another run built %s", side, got.digest, digest)
		}
	}
	reset := func(b *testing.B) { db.exec(b, `TRUNCATE orders, order_items`) }
	for _, batch := range []int{1000, 500} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			baseline := func(r int) measurement {
				reset(b)
				m, err := measure(b.Context(), labelPGX, func(ctx context.Context) (int, error) {
					return pgxProject(ctx, db.pool, fmt.Sprintf("pgx-%d-%d", batch, r), batch)
				})
				if err != nil || m.events != events {
					b.Fatalf("pgx projected %d of %d events: %v", m.events, events, err)
				}
				check(b, "pgx")
				return m
			}
			proj := func(r int) measurement {
				reset(b)
				name := fmt.Sprintf("orders-%d-%d", batch, r)
				m := p.measureCatchUp(b, name, batch, sink, last, events)
				cp, ok, err := store.NewTarget(db.pool, setupTimeout).Load(b.Context(), name)
				if err != nil || !ok || cp.Cursor != last || cp.EventsApplied != int64(events) {
					b.Fatalf("projector %s: checkpoint %+v (found %v, err %v), want cursor %s and %d events", name, cp, ok, err, last, events)
				}
				check(b, "projectord")
				return m
			}
			res := rounds(b, "pgx", "projectord", baseline, proj)
			reportRatio(b, "catch-up, SQL sink, 3 upserting handlers", fmt.Sprintf("(%d events)", events), batch, 1.0, res)
		})
	}
}
