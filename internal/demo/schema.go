package demo

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
)

// EventsTable is the demo's events table, in the native layout.
const EventsTable = "public.events"

// Event types of the stream.
const (
	OrderPlaced        = "OrderPlaced"
	ItemAdded          = "ItemAdded"
	PaymentCaptured    = "PaymentCaptured"
	ShipmentDispatched = "ShipmentDispatched"
)

// ownerComment marks every table Setup creates. A table of the same name
// without it belongs to someone else: Setup refuses to write into it, so
// pointing dev at a real database cannot mix fake orders into real events.
const ownerComment = "created by projectord dev"

// ErrForeignTable is returned by Setup when a table it needs exists and was
// not created by it.
var ErrForeignTable = errors.New("exists and was not created by projectord dev")

// setupLock serialises concurrent Setups on one database (two dev processes
// started together): an advisory lock key of its own, "pdev".
const setupLock = 0x70646576

// table is one table Setup owns.
type table struct {
	name string
	ddl  []string
}

// tables are the events table and the read models configs/dev.yaml writes.
// Their columns are what the handlers there set and what Verify compares.
func tables() []table {
	return []table{
		{name: EventsTable, ddl: store.NativeTableSQL(EventsTable)},
		{name: "public.order_totals", ddl: []string{`CREATE TABLE IF NOT EXISTS public.order_totals (
    order_id    text PRIMARY KEY,
    customer_id text,
    items       integer NOT NULL DEFAULT 0,
    total       numeric(12,2) NOT NULL DEFAULT 0,
    status      text NOT NULL DEFAULT 'placed',
    placed_at   timestamptz,
    updated_at  timestamptz NOT NULL
)`}},
		{name: "public.revenue_by_day", ddl: []string{`CREATE TABLE IF NOT EXISTS public.revenue_by_day (
    day      date PRIMARY KEY,
    orders   integer NOT NULL DEFAULT 0,
    payments integer NOT NULL DEFAULT 0,
    revenue  numeric(14,2) NOT NULL DEFAULT 0
)`}},
		{name: "public.shipments_pending", ddl: []string{`CREATE TABLE IF NOT EXISTS public.shipments_pending (
    order_id    text PRIMARY KEY,
    customer_id text,
    amount      numeric(12,2) NOT NULL,
    paid_at     timestamptz NOT NULL
)`}},
	}
}

// SetupOptions configure Setup.
type SetupOptions struct {
	// Notify installs the opt-in NOTIFY trigger of `projectord source
	// prepare --notify` on the events table, notifying Channel.
	Notify  bool
	Channel string
}

// Setup creates whichever of the demo's tables is missing and returns the
// names of those it created. Tables it created earlier are reused as they
// are (their rows stay); a table of the same name that it did not create is
// left untouched and reported as ErrForeignTable. Setup never drops
// anything.
func Setup(ctx context.Context, pool *pgxpool.Pool, opts SetupOptions) ([]string, error) {
	if opts.Notify && opts.Channel == "" {
		return nil, errors.New("error setting up the demo: Notify needs a Channel")
	}
	var created []string
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, setupLock); err != nil {
			return err
		}
		for _, t := range tables() {
			var exists bool
			var comment *string
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL, obj_description(to_regclass($1), 'pg_class')`,
				t.name).Scan(&exists, &comment); err != nil {
				return err
			}
			if exists {
				if comment == nil || *comment != ownerComment {
					return fmt.Errorf("table %s %w; refusing to touch it (point --database-url at another database)", t.name, ErrForeignTable)
				}
				continue
			}
			for _, q := range t.ddl {
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("error creating %s: %w", t.name, err)
				}
			}
			if _, err := tx.Exec(ctx, "COMMENT ON TABLE "+quoteTable(t.name)+" IS '"+ownerComment+"'"); err != nil {
				return err
			}
			created = append(created, t.name)
		}
		if !opts.Notify {
			return nil
		}
		for _, s := range prepareSteps(opts.Channel) {
			if s.Concurrent {
				continue // run below: not allowed in a transaction block
			}
			if _, err := tx.Exec(ctx, s.SQL); err != nil {
				return fmt.Errorf("error applying %q: %w", s.Why, err)
			}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrForeignTable) {
			return nil, err
		}
		return nil, fmt.Errorf("error setting up the demo tables: %w", err)
	}
	if opts.Notify {
		// The native table already has this index; the statement is kept so
		// that the demo runs exactly what `source prepare --notify` does.
		for _, s := range prepareSteps(opts.Channel) {
			if !s.Concurrent {
				continue
			}
			if _, err := pool.Exec(ctx, s.SQL); err != nil {
				return created, fmt.Errorf("error applying %q: %w", s.Why, err)
			}
		}
	}
	return created, nil
}

// prepareSteps are the statements of `projectord source prepare --notify`
// for the demo's events table.
func prepareSteps(channel string) []store.PrepareStep {
	return store.PrepareSQL(store.Source{Table: EventsTable, Columns: store.NativeColumns, Ordering: store.OrderXID8}, true, channel)
}

// quoteTable quotes a schema-qualified name; every demo table has one.
func quoteTable(name string) string {
	schema, rel, _ := strings.Cut(name, ".")
	return pgx.Identifier{schema, rel}.Sanitize()
}
