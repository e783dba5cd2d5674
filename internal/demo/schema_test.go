package demo_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/demo"
)

var demoTables = []string{"public.events", "public.order_totals", "public.revenue_by_day", "public.shipments_pending"}

func TestSetupCreatesThenReuses(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	created, err := demo.Setup(tb.ctx, tb.pool, demo.SetupOptions{})
	require.NoError(t, err)
	require.Equal(t, demoTables, created)
	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO order_totals (order_id, updated_at) VALUES ('kept', now())`)
	require.NoError(t, err)

	created, err = demo.Setup(tb.ctx, tb.pool, demo.SetupOptions{Notify: true, Channel: "demo_events"})
	require.NoError(t, err)
	require.Empty(t, created, "a second run reuses the tables")
	require.EqualValues(t, 1, tb.count(t, `SELECT count(*) FROM order_totals WHERE order_id = 'kept'`), "rows stay")
	require.EqualValues(t, 1, tb.count(t, `SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.events'::regclass AND NOT tgisinternal`))

	// The trigger notifies the channel on every insert.
	conn, err := tb.pool.Acquire(tb.ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(tb.ctx, `LISTEN demo_events`)
	require.NoError(t, err)
	tb.generate(t, 1, 1)
	n, err := conn.Conn().WaitForNotification(tb.ctx)
	require.NoError(t, err)
	require.Equal(t, "demo_events", n.Channel)
}

func TestSetupRefusesTablesItDidNotCreate(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE public.revenue_by_day (day date PRIMARY KEY, amount numeric)`)
	require.NoError(t, err)
	_, err = demo.Setup(tb.ctx, tb.pool, demo.SetupOptions{})
	require.ErrorIs(t, err, demo.ErrForeignTable)
	require.ErrorContains(t, err, "public.revenue_by_day")
	require.Zero(t, tb.count(t, `SELECT count(*) FROM pg_class WHERE relname IN ('events', 'order_totals', 'shipments_pending')`),
		"nothing is created when one table is someone else's")
	require.EqualValues(t, 2, tb.count(t, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'revenue_by_day'`),
		"the foreign table is untouched")
}
