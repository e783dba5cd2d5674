package demo_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/demo"
)

// fillReadModels writes what configs/dev.yaml's projectors would, computed
// in one go. The end-to-end test of `projectord dev` checks the real
// projectors; this checks that Verify compares what it should.
func (tb *testBundle) fillReadModels(t *testing.T) {
	t.Helper()
	_, err := tb.pool.Exec(tb.ctx, `
		INSERT INTO order_totals (order_id, customer_id, items, total, status, placed_at, updated_at)
		SELECT data->>'order_id',
		       min(data->>'customer_id') FILTER (WHERE event_type = 'OrderPlaced'),
		       coalesce(sum((data->>'quantity')::int) FILTER (WHERE event_type = 'ItemAdded'), 0),
		       coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'ItemAdded'), 0),
		       CASE WHEN bool_or(event_type = 'ShipmentDispatched') THEN 'shipped'
		            WHEN bool_or(event_type = 'PaymentCaptured') THEN 'paid' ELSE 'placed' END,
		       min(created_at), max(created_at)
		  FROM events GROUP BY 1;
		INSERT INTO revenue_by_day (day, orders, payments, revenue)
		SELECT (created_at AT TIME ZONE 'UTC')::date,
		       count(*) FILTER (WHERE event_type = 'OrderPlaced'),
		       count(*) FILTER (WHERE event_type = 'PaymentCaptured'),
		       coalesce(sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'PaymentCaptured'), 0)
		  FROM events WHERE event_type IN ('OrderPlaced', 'PaymentCaptured') GROUP BY 1;
		INSERT INTO shipments_pending (order_id, customer_id, amount, paid_at)
		SELECT data->>'order_id', data->>'customer_id', (data->>'amount')::numeric, created_at
		  FROM events p WHERE event_type = 'PaymentCaptured'
		   AND NOT EXISTS (SELECT FROM events s WHERE s.stream_id = p.stream_id AND s.event_type = 'ShipmentDispatched')`)
	require.NoError(t, err)
}

func TestVerify(t *testing.T) {
	t.Parallel()
	tb := setupDemo(t)
	g := tb.generate(t, 600, 3)

	r, err := demo.Verify(tb.ctx, tb.pool)
	require.NoError(t, err)
	require.False(t, r.OK(), "empty read models")
	require.Len(t, r.Problems, 3)
	require.Contains(t, r.Problems[0], fmt.Sprintf("order_totals: %d orders missing", g.Stats().Orders))

	tb.fillReadModels(t)
	r, err = demo.Verify(tb.ctx, tb.pool)
	require.NoError(t, err)
	require.True(t, r.OK(), "%v", r.Problems)
	st := g.Stats()
	require.Equal(t, st.Events, r.Events)
	require.Equal(t, st.Orders, r.Orders)
	require.Equal(t, st.Shipped, r.Shipped)
	require.EqualValues(t, 1, r.Days)
	require.Regexp(t, `^\d+\.\d\d$`, r.Revenue)
	require.Positive(t, r.Pending)

	for _, tt := range []struct{ corrupt, want string }{
		{`UPDATE order_totals SET total = total + 0.01 WHERE order_id = (SELECT min(order_id) FROM order_totals)`,
			"order_totals: 0 orders missing, 0 unexpected, 1 different"},
		{`UPDATE revenue_by_day SET payments = payments + 1`, "revenue_by_day: 0 days missing, 0 unexpected, 1 different"},
		{`DELETE FROM shipments_pending WHERE order_id = (SELECT min(order_id) FROM shipments_pending)`,
			"shipments_pending: 1 orders missing, 0 unexpected, 0 different"},
		{`INSERT INTO order_totals (order_id, updated_at) VALUES ('ghost', now())`, "order_totals: 0 orders missing, 1 unexpected"},
	} {
		tx, err := tb.pool.Begin(tb.ctx)
		require.NoError(t, err)
		_, err = tx.Exec(tb.ctx, tt.corrupt)
		require.NoError(t, err)
		r, err := demo.Verify(tb.ctx, tb.pool)
		require.NoError(t, err)
		require.True(t, r.OK(), "uncommitted changes are invisible")
		require.NoError(t, tx.Commit(tb.ctx))
		r, err = demo.Verify(tb.ctx, tb.pool)
		require.NoError(t, err)
		require.Len(t, r.Problems, 1, tt.corrupt)
		require.Contains(t, r.Problems[0], tt.want)
		tb.reset(t)
	}
}

// reset rebuilds the read models from the events.
func (tb *testBundle) reset(t *testing.T) {
	t.Helper()
	_, err := tb.pool.Exec(tb.ctx, `TRUNCATE order_totals, revenue_by_day, shipments_pending`)
	require.NoError(t, err)
	tb.fillReadModels(t)
}
