package daemon

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/httpsink/sinktest"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// A pause that lands while an HTTP projector's request is in flight (here:
// from inside the receiver, before it answers 2xx): that one request
// arrives, its checkpoint move is refused, and nothing more is posted
// until the resume; after it, every event is acknowledged, an event
// acknowledged twice only under one webhook-id (the paused batch comes
// again whole).
func TestPGHTTPSinkPauseStopsPostingAfterTheRequestInFlight(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 200, 20, "A")
	target := store.NewTarget(tb.pool, 5*time.Second)
	var paused atomic.Int64 // the number of the request the pause landed in
	recv := sinktest.Start(t, func(r sinktest.Request) *sinktest.Answer {
		if r.N == 3 {
			_, err := target.Pause(context.Background(), "hooks", "test")
			if err != nil {
				t.Error(err)
			}
			_, err = tb.pool.Exec(context.Background(), `SELECT pg_notify($1, 'hooks')`, store.PauseChannel)
			if err != nil {
				t.Error(err)
			}
			paused.Store(int64(r.N))
		}
		return nil
	})
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 10})
	tb.startDaemon(t, cfg, "node-a")
	testsupport.Until(t, "the pause landed", 30*time.Second, func() bool { return paused.Load() > 0 })
	cp := tb.checkpoint(t, "hooks")
	require.Never(t, func() bool { return len(recv.Requests()) > 3 }, 3*time.Second, 20*time.Millisecond,
		"requests posted while paused")
	require.Equal(t, cp.Cursor, tb.checkpoint(t, "hooks").Cursor, "the checkpoint moved while paused")
	require.Less(t, cp.EventsApplied, int64(30), "the in-flight batch's move was refused")

	_, err := target.Resume(tb.ctx, "hooks")
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `SELECT pg_notify($1, 'hooks')`, store.ResumeChannel)
	require.NoError(t, err)
	tb.waitCaughtUp(t, "hooks")
	reqs := recv.Requests()
	require.Greater(t, len(reqs), 3)
	require.Equal(t, reqs[2].ID, reqs[3].ID, "the batch in flight at the pause comes again under its id")
	require.Empty(t, recv.Check(tb.cursorOrder(t)))
	require.Len(t, recv.Acked(), 200)
}
