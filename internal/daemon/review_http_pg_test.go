package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/httpsink/sinktest"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// Review: a leader posts a batch of 10 (batch_size 100), the receiver
// acknowledges it, and the leader is deposed before its checkpoint moves.
// The next leader runs with a smaller batch_size (a rolling config change,
// or a replica with another config): the recorded range is longer than what
// it reads, the bound does not hold, and the acknowledged events arrive
// again under other webhook-ids, which the acceptance forbids.
func TestReviewHTTPSinkSmallerBatchSizeAfterFailoverReusesTheID(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 10, 10, "A")
	var once sync.Once
	recv := sinktest.Start(t, func(r sinktest.Request) *sinktest.Answer {
		once.Do(func() {
			// The 2xx goes out; another leader claims before the checkpoint moves.
			_, err := tb.pool.Exec(context.Background(), `UPDATE projectord.checkpoints SET epoch = epoch + 1 WHERE projector = 'hooks'`)
			if err != nil {
				t.Error(err)
			}
		})
		return nil
	})
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 100})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	a := tb.httpBackend(t, cfg, "node-a")
	require.ErrorIs(t, runner.Run(tb.ctx, p, a), runner.ErrDeposed)
	require.Len(t, recv.Requests(), 1)

	cfg2 := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 4})
	p2 := ProjectorOf(cfg2.Projectors[0], cfg2, tb.log, nil)
	b := tb.httpBackend(t, cfg2, "node-b")
	ctx, cancel := context.WithCancel(tb.ctx)
	done := start(ctx, p2, b)
	tb.waitCaughtUp(t, "hooks")
	cancel()
	require.NoError(t, <-done)
	for _, q := range recv.Requests() {
		t.Logf("request %d id %s positions %v status %d", q.N, q.ID, q.Positions, q.Status)
	}
	require.Empty(t, recv.Check(tb.cursorOrder(t)))
}

// Review: `projectord reset` of an HTTP projector replays every event, but
// under the very webhook-ids of the first delivery (the id is the range's
// hash, nothing marks the new generation), and with the same positions.
// A receiver deduplicating as the README tells it to (by webhook-id, or by
// the last position applied, as examples/webhookreceiver does) drops the
// whole replay as duplicates: the reset reaches nobody, silently.
func TestReviewHTTPSinkResetReplaysUnderTheOldWebhookIDs(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 12, 12, "A")
	recv := sinktest.Start(t, nil)
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 5})
	tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "hooks")
	before := recv.Requests()
	seen := map[string]bool{}
	for _, q := range before {
		seen[q.ID] = true
	}
	_, err := store.NewTarget(tb.pool, 5*time.Second).Reset(tb.ctx, "hooks", "")
	require.NoError(t, err)
	testsupport.Until(t, "the replay is delivered", 30*time.Second, func() bool {
		return tb.peek("hooks").EventsApplied == 12
	})
	replay := recv.Requests()[len(before):]
	require.NotEmpty(t, replay)
	for _, q := range replay {
		require.False(t, seen[q.ID], "replayed batch %v after the reset under webhook-id %s, already acknowledged before it", q.Positions, q.ID)
	}
}

// Review: the README tells receivers they may deduplicate "by position
// (... keep ... the last position applied)", and the example receiver's doc
// says "the last position per read model". But deliveries are in cursor
// order, (transaction id, position) under the default ordering xid8, and
// positions are not monotonic in it: a transaction with the older xid can
// insert after a younger one. A receiver that keeps the last position
// applied and skips anything at or below it drops such an event for good,
// although projectord delivered it and moved its checkpoint past it.
func TestReviewHTTPSinkLastPositionDedupLosesEventsUnderXID8(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	older, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer older.Rollback(tb.ctx)
	_, err = older.Exec(tb.ctx, `SELECT pg_current_xact_id()`) // the older xid
	require.NoError(t, err)
	younger, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer younger.Rollback(tb.ctx)
	ins := `INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ($1, 1, 'A', '{}')`
	_, err = younger.Exec(tb.ctx, ins, "s-young") // the lower position
	require.NoError(t, err)
	_, err = older.Exec(tb.ctx, ins, "s-old") // the higher position, first in cursor order
	require.NoError(t, err)
	require.NoError(t, younger.Commit(tb.ctx))
	require.NoError(t, older.Commit(tb.ctx))

	// The receiver as the README describes it: a set of the positions
	// applied (a unique key), never the last position applied.
	var mu sync.Mutex
	applied := map[int64]bool{}
	recv := sinktest.Start(t, func(r sinktest.Request) *sinktest.Answer {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range r.Positions {
			if applied[p] {
				continue // already applied
			}
			applied[p] = true
		}
		return nil
	})
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 1})
	tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "hooks")
	mu.Lock()
	defer mu.Unlock()
	for _, q := range recv.Requests() {
		t.Logf("request %d positions %v", q.N, q.Positions)
	}
	reqs := recv.Requests()
	require.GreaterOrEqual(t, len(reqs), 2)
	require.Greater(t, reqs[0].Positions[0], reqs[1].Positions[0], "the higher position is delivered first (older transaction)")
	require.Len(t, applied, 2, "every delivered event applied by a receiver deduplicating as documented")
}

// Review: the recorded range is not re-read whole when the new leader's
// replica has not yet seen its end. Leader A reads a batch at the live tail
// (events its replica found just now), posts it, the receiver acknowledges
// it, and A loses the projector before its checkpoint moves (a graceful
// hand-over or restart: the lock is released and B claims at once, within
// B's poll interval). B reads through its shared window, which ends at B's
// head: the read is short, ends before the recorded last cursor, so the
// bound cuts nothing and B posts the acknowledged events again under
// another webhook-id. Here B's watcher polls once an hour and is kicked by
// hand, to place its last poll between the events.
func TestReviewHTTPSinkNewLeaderBehindTheRecordedRangeSendsAnotherID(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	var once sync.Once
	recv := sinktest.Start(t, func(r sinktest.Request) *sinktest.Answer {
		once.Do(func() {
			_, err := tb.pool.Exec(context.Background(), `UPDATE projectord.checkpoints SET epoch = epoch + 1 WHERE projector = 'hooks'`)
			if err != nil {
				t.Error(err)
			}
		})
		return nil
	})
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 100})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)

	// Replica B, wired as the daemon wires shared reads.
	reader := store.NewReader(tb.pool, SourceOf(cfg.Source), 5*time.Second)
	w := runner.NewWatcher(reader, time.Hour, tb.log)
	ctx, cancel := context.WithCancel(tb.ctx)
	defer cancel()
	tail := runner.NewTail(runner.TailConfig{Source: reader, Heads: w.Head, Context: ctx, Limit: 200, Capacity: 1000})
	w.BeforePublish(tail.Advance)
	w.PollWith(tail.Poll)
	go w.Run(ctx)
	testsupport.Until(t, "B's watcher polled once", 10*time.Second, func() bool { at, _ := w.LastPoll(); return !at.IsZero() })
	// The window is in use (another projector of B's at the tail).
	_, err := tail.Read(ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	tb.appendEvents(t, 3, 3, "A")
	three := tb.lastEvent(t)
	// Kicked until it sees them: another test's open transaction holds the
	// cluster's horizon, and a poll under it stops short of them.
	testsupport.Until(t, "B's watcher saw the first events", 30*time.Second, func() bool {
		if h, _ := w.Head(); h == three {
			return true
		}
		w.Kick()
		return false
	})
	tb.appendEvents(t, 2, 2, "A") // after B's last poll

	a := tb.httpBackend(t, cfg, "node-a")
	require.ErrorIs(t, runner.Run(tb.ctx, p, a), runner.ErrDeposed)
	require.Len(t, recv.Requests()[0].Positions, 5)

	bsql := tb.httpBackend(t, cfg, "node-b") // for its session only
	b := runner.NewPGBackend(runner.PGBackendConfig{Node: "node-b", Reader: reader, Watcher: w, Tail: tail, Session: bsql.Session})
	d := New(Options{Config: cfg, Logger: tb.log})
	hs, err := d.httpSinks(tb.ctx, tb.pool)
	require.NoError(t, err)
	b.AddHTTPProjector("hooks", hs["hooks"].target, hs["hooks"].sink)
	rctx, stop := context.WithCancel(tb.ctx)
	done := start(rctx, p, b)
	testsupport.Until(t, "B delivered", 30*time.Second, func() bool { return len(recv.Requests()) >= 2 })
	stop()
	require.NoError(t, <-done)
	for _, q := range recv.Requests() {
		t.Logf("request %d id %s positions %v status %d", q.N, q.ID, q.Positions, q.Status)
	}
	require.Empty(t, recv.Check(tb.cursorOrder(t)))
}

// Review: a 401, 403 or 404 says the request is wrong for every event alike
// (an expired token in headers_file, a rotated secret, a wrong path), yet
// it is taken for a failure of the batch's events: the loop halves down to
// each event and applies on_error to it. With skip (or dead_letter) the
// checkpoint runs to the end and no event ever reaches the receiver.
func TestReviewHTTPSinkUnauthorizedSkipsEveryEvent(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 20, 20, "A")
	recv := sinktest.Start(t, func(sinktest.Request) *sinktest.Answer { return &sinktest.Answer{Status: 401} })
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 8,
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: "skip"}})
	tb.startDaemon(t, cfg, "node-a")
	testsupport.Until(t, "the leader got going", 30*time.Second, func() bool { return len(recv.Requests()) > 0 })
	require.Never(t, func() bool { return !tb.peek("hooks").Cursor.IsZero() }, 3*time.Second, 20*time.Millisecond,
		"the checkpoint moved past events no receiver accepted (%d requests, all 401)", len(recv.Requests()))
}
