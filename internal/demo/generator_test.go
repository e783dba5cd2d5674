package demo_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/demo"
)

func TestGeneratorAppendsConsistentOrderStreams(t *testing.T) {
	t.Parallel()
	tb := setupDemo(t)
	g := tb.generate(t, 1200, 4)
	st := g.Stats()
	require.EqualValues(t, 1200, st.Events)
	require.EqualValues(t, 1200, tb.count(t, `SELECT count(*) FROM events`))
	require.Equal(t, st.Orders, tb.count(t, `SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'`))
	require.Equal(t, st.Shipped, tb.count(t, `SELECT count(*) FROM events WHERE event_type = 'ShipmentDispatched'`))
	require.Positive(t, st.Shipped, "some orders complete")
	require.Less(t, st.Shipped, st.Orders, "some orders are still open")

	// Every stream is order-<uuid v4>, numbered 1..n without gaps, and its
	// events follow the order lifecycle.
	require.Zero(t, tb.count(t, `SELECT count(*) FROM (
		SELECT stream_id FROM events GROUP BY stream_id
		HAVING min(stream_version) <> 1 OR max(stream_version) <> count(*)
		    OR stream_id !~ '^order-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$'
		    OR string_agg(event_type, ',' ORDER BY stream_version)
		       !~ '^OrderPlaced(,ItemAdded){0,5}$|^OrderPlaced(,ItemAdded){1,5},PaymentCaptured(,ShipmentDispatched)?$') bad`))

	// The data is what the read models need, and adds up: a payment is
	// the sum of the order's items, a shipment carries their quantity.
	require.Zero(t, tb.count(t, `SELECT count(*) FROM events WHERE data->>'order_id' IS NULL
		OR 'order-' || (data->>'order_id') <> stream_id
		OR (event_type = 'OrderPlaced' AND data->>'customer_id' !~ '^cust-\d{4}$')
		OR (event_type = 'ItemAdded' AND ((data->>'amount')::numeric <> (data->>'unit_price')::numeric * (data->>'quantity')::int
		                                  OR data->>'sku' !~ '^SKU-\d+$'))`))
	require.Zero(t, tb.count(t, `SELECT count(*) FROM (
		SELECT stream_id,
		       sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'ItemAdded') AS items,
		       sum((data->>'amount')::numeric) FILTER (WHERE event_type = 'PaymentCaptured') AS paid,
		       sum((data->>'quantity')::int) FILTER (WHERE event_type = 'ItemAdded') AS qty,
		       sum((data->>'items')::int) FILTER (WHERE event_type = 'ShipmentDispatched') AS shipped
		  FROM events GROUP BY stream_id) o
		WHERE paid <> items OR shipped <> qty`))
	require.EqualValues(t, 4, tb.count(t, `SELECT count(DISTINCT metadata->>'writer') FROM events`))
}

func TestGeneratorKeepsToTheRate(t *testing.T) {
	t.Parallel()
	tb := setupDemo(t)
	g, err := demo.NewGenerator(tb.pool, demo.Options{Rate: 200, Writers: 4, Limit: 100})
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, g.Start(tb.ctx))
	defer g.Stop()
	select {
	case <-g.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("100 events at 200/s not done within 20s: %+v", g.Stats())
	}
	// The 100th event is due 0.5s after the start, never earlier.
	elapsed := time.Since(start)
	require.GreaterOrEqual(t, elapsed, 490*time.Millisecond)
	require.EqualValues(t, 100, tb.count(t, `SELECT count(*) FROM events`))
	t.Logf("100 events at 200/s took %s", elapsed)
}

func TestGeneratorStopFinishesAppendsInFlight(t *testing.T) {
	t.Parallel()
	tb := setupDemo(t)
	g, err := demo.NewGenerator(tb.pool, demo.Options{Writers: 4})
	require.NoError(t, err)
	require.NoError(t, g.Start(tb.ctx))
	waitFor(t, 20*time.Second, func() bool { return g.Stats().Events >= 300 })
	g.Stop()
	select {
	case <-g.Done():
	default:
		t.Fatal("Done is open after Stop")
	}
	st := g.Stats()
	require.Equal(t, st.Events, tb.count(t, `SELECT count(*) FROM events`), "every counted event is committed, and only those")
	g.Stop() // twice is fine
	require.Equal(t, st, g.Stats(), "nothing is appended after Stop")
}

func TestGeneratorStopsWithItsContext(t *testing.T) {
	t.Parallel()
	tb := setupDemo(t)
	g, err := demo.NewGenerator(tb.pool, demo.Options{Rate: 1000, Writers: 2})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	require.NoError(t, g.Start(ctx))
	waitFor(t, 20*time.Second, func() bool { return g.Stats().Events >= 10 })
	cancel()
	select {
	case <-g.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("generator kept running after its context ended")
	}
}

func TestNewGeneratorRejectsBadOptions(t *testing.T) {
	t.Parallel()
	for _, o := range []demo.Options{{Rate: -1}, {Writers: -2}, {Limit: -5}} {
		_, err := demo.NewGenerator(nil, o)
		require.Error(t, err, "%+v", o)
	}
	g, err := demo.NewGenerator(nil, demo.Options{})
	require.NoError(t, err)
	g.Stop() // before Start: nothing to stop
	require.NoError(t, g.Start(t.Context()), "Start after Stop does nothing")
	<-g.Done()
	require.Zero(t, g.Stats().Events)
}
