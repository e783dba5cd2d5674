package demo

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Report is what Verify found.
type Report struct {
	Events   int64  // events in the table
	Orders   int64  // orders placed
	Shipped  int64  // orders shipped
	Days     int64  // days with orders or payments
	Revenue  string // payments captured, in EUR
	Pending  int64  // orders paid and not shipped yet
	Problems []string
}

// OK reports whether every read model agrees with the events.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// verifyQueries compute each read model from the events table (the oracle)
// and count the rows where the read model disagrees: missing, unexpected or
// different. They are the handlers of configs/dev.yaml restated as
// aggregates, so a projector that skipped an event or applied one twice
// shows up here.
const (
	verifyOrderTotals = `
WITH expected AS (
    SELECT data->>'order_id' AS order_id,
           min(data->>'customer_id') FILTER (WHERE event_type = 'OrderPlaced') AS customer_id,
           coalesce(sum((data->>'quantity')::int) FILTER (WHERE event_type = 'ItemAdded'), 0) AS items,
           coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'ItemAdded'), 0) AS total,
           CASE WHEN bool_or(event_type = 'ShipmentDispatched') THEN 'shipped'
                WHEN bool_or(event_type = 'PaymentCaptured') THEN 'paid'
                ELSE 'placed' END AS status
      FROM public.events
     WHERE starts_with(stream_id, 'order-')
     GROUP BY 1
)
SELECT count(e.order_id),
       count(*) FILTER (WHERE e.status = 'shipped'),
       count(*) FILTER (WHERE r.order_id IS NULL),
       count(*) FILTER (WHERE e.order_id IS NULL),
       count(*) FILTER (WHERE e.order_id IS NOT NULL AND r.order_id IS NOT NULL AND
                              (e.customer_id, e.items, e.total, e.status) IS DISTINCT FROM
                              (r.customer_id, r.items, r.total, r.status))
  FROM expected e FULL JOIN public.order_totals r USING (order_id)`

	verifyRevenueByDay = `
WITH expected AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE event_type = 'OrderPlaced') AS orders,
           count(*) FILTER (WHERE event_type = 'PaymentCaptured') AS payments,
           coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'PaymentCaptured'), 0) AS revenue
      FROM public.events
     WHERE event_type IN ('OrderPlaced', 'PaymentCaptured')
     GROUP BY 1
)
SELECT count(e.day),
       coalesce(sum(e.revenue), 0)::numeric(14,2)::text,
       count(*) FILTER (WHERE r.day IS NULL),
       count(*) FILTER (WHERE e.day IS NULL),
       count(*) FILTER (WHERE e.day IS NOT NULL AND r.day IS NOT NULL AND
                              (e.orders, e.payments, e.revenue) IS DISTINCT FROM (r.orders, r.payments, r.revenue))
  FROM expected e FULL JOIN public.revenue_by_day r USING (day)`

	verifyShipmentsPending = `
WITH expected AS (
    SELECT p.data->>'order_id' AS order_id, p.data->>'customer_id' AS customer_id,
           (p.data->>'amount')::numeric AS amount
      FROM public.events p
     WHERE p.event_type = 'PaymentCaptured'
       AND NOT EXISTS (SELECT FROM public.events s
                        WHERE s.stream_id = p.stream_id AND s.event_type = 'ShipmentDispatched')
)
SELECT count(e.order_id),
       count(*) FILTER (WHERE r.order_id IS NULL),
       count(*) FILTER (WHERE e.order_id IS NULL),
       count(*) FILTER (WHERE e.order_id IS NOT NULL AND r.order_id IS NOT NULL AND
                              (e.customer_id, e.amount) IS DISTINCT FROM (r.customer_id, r.amount))
  FROM expected e FULL JOIN public.shipments_pending r USING (order_id)`
)

// Verify compares every read model of configs/dev.yaml with what the events
// table says it should hold, in one snapshot. The read models agree only
// once the projectors have applied every event, so callers stop the
// generator and poll Verify until it is OK or their patience ends.
func Verify(ctx context.Context, pool *pgxpool.Pool) (Report, error) {
	var r Report
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM public.events`).Scan(&r.Events); err != nil {
			return err
		}
		var missing, unexpected, differ int64
		if err := tx.QueryRow(ctx, verifyOrderTotals).Scan(&r.Orders, &r.Shipped, &missing, &unexpected, &differ); err != nil {
			return fmt.Errorf("order_totals: %w", err)
		}
		r.problem("order_totals", "orders", missing, unexpected, differ)
		if err := tx.QueryRow(ctx, verifyRevenueByDay).Scan(&r.Days, &r.Revenue, &missing, &unexpected, &differ); err != nil {
			return fmt.Errorf("revenue_by_day: %w", err)
		}
		r.problem("revenue_by_day", "days", missing, unexpected, differ)
		if err := tx.QueryRow(ctx, verifyShipmentsPending).Scan(&r.Pending, &missing, &unexpected, &differ); err != nil {
			return fmt.Errorf("shipments_pending: %w", err)
		}
		r.problem("shipments_pending", "orders", missing, unexpected, differ)
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("error verifying the read models: %w", err)
	}
	return r, nil
}

func (r *Report) problem(table, rows string, missing, unexpected, differ int64) {
	if missing+unexpected+differ == 0 {
		return
	}
	r.Problems = append(r.Problems, fmt.Sprintf("%s: %d %s missing, %d unexpected, %d different",
		table, missing, rows, unexpected, differ))
}
