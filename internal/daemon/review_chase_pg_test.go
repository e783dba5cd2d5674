package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/testsupport"
)

// TestPGNotifyPartlyHeldByTheHorizonIsChased: two older transactions hold
// the horizon, as the cluster's heartbeats and checkpoint commits do all
// the time. H1 holds it below W1 and W2, H2 (begun between them) below W2
// only. Both writers notify while H1 holds, so the NOTIFY's poll reads
// neither; H1 ends and the chase reads W1; H2 ends, and nothing notifies.
// W2 is as announced as W1 and must not wait for the poll interval (a
// minute here) either: the watcher ends its chase on any head move.
// Not parallel, like the tests above: the horizon is the cluster's.
func TestPGNotifyPartlyHeldByTheHorizonIsChased(t *testing.T) {
	tb := setupPG(t)
	listeningLeader(t, tb, "partly")

	hold := func() func() error {
		tx, err := tb.pool.Begin(tb.ctx)
		require.NoError(t, err)
		t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
		var xid string
		require.NoError(t, tx.QueryRow(tb.ctx, `SELECT pg_current_xact_id()::text`).Scan(&xid)) // holds the horizon from here
		return func() error { return tx.Commit(tb.ctx) }
	}
	endH1 := hold()
	tb.appendEvents(t, 2, 2, "A") // W1: commits and notifies
	w1 := tb.lastEvent(t)
	endH2 := hold()
	tb.appendEvents(t, 3, 3, "A")      // W2: commits and notifies
	time.Sleep(200 * time.Millisecond) // how long H1 holds the horizon, not a synchronisation
	require.NoError(t, endH1())
	testsupport.Until(t, "W1 read by the chase", 10*time.Second, func() bool { return tb.peek("partly").Cursor == w1 })
	require.NoError(t, endH2())
	start := time.Now()
	tb.waitCaughtUp(t, "partly")
	require.Less(t, time.Since(start), 10*time.Second, "W2, announced by its NOTIFY, waited for the poll interval")
	require.Equal(t, 6, tb.checkExactlyOnce(t, "partly"))
}
