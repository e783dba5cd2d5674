package daemon

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/httpsink/sinktest"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// A leader posts a batch of 10 (batch_size 100), the receiver acknowledges
// it, and the leader is deposed before its checkpoint moves. The next
// leader runs with a smaller batch_size (a rolling config change, or a
// replica with another config): it still sends the recorded batch whole,
// under its webhook-id, never sub-batches of acknowledged events under
// other ids.
func TestPGHTTPSinkSmallerBatchSizeAfterFailoverResendsTheRecordedBatchUnderItsID(t *testing.T) {
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

// `projectord reset` of an HTTP projector replays every event under new
// webhook-ids (the reset generation is in them, and in resetgeneration), so
// a receiver deduplicating by webhook-id applies the replay.
func TestPGHTTPSinkResetReplaysUnderNewWebhookIDs(t *testing.T) {
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

// Deliveries are in cursor order, (transaction id, position) under the
// default ordering xid8, and positions are not monotonic in it: a
// transaction with the older xid can insert after a younger one. A
// receiver deduplicating as the README says (a set of positions, a unique
// key; never "the last position applied", which would drop the second
// event here for good) applies both.
func TestPGHTTPSinkASetOfPositionsKeepsEveryEventUnderXID8(t *testing.T) {
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

// Leader A reads a batch at the live tail (events its replica found just
// now), posts it, the receiver acknowledges it, and A loses the projector
// before its checkpoint moves (a graceful hand-over or restart: the lock is
// released and B claims at once, within B's poll interval). B's shared
// window ends at B's head, before the recorded last cursor: B reads the
// recorded batch with its own reader, whole, and sends it under the same
// webhook-id (a short batch under another id would repeat acknowledged
// events). Here B's watcher polls once an hour and is kicked by hand, to
// place its last poll between the events.
func TestPGHTTPSinkNewLeaderBehindTheRecordedEndSendsTheSameBatchAndID(t *testing.T) {
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

// A 401 (like 403, 404, 405, 407) says the request is wrong for every
// event alike (an expired token in headers_file, a rotated secret, a wrong
// path): it is retried with backoff like a 5xx, never halved down and
// charged to events, so even with on_error skip the checkpoint does not
// move past events no receiver accepted; last_error says why.
func TestPGHTTPSinkUnauthorizedIsRetriedNeverChargedToEvents(t *testing.T) {
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
	testsupport.Until(t, "last_error names the 401", 30*time.Second, func() bool {
		e := tb.peek("hooks").LastError
		return strings.HasPrefix(e, "retrying: ") && strings.Contains(e, "answered 401 Unauthorized")
	})
	require.Zero(t, tb.count(t, `SELECT count(*) FROM projectord.dead_letters`))
}

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

// A new leader whose event_types differ from the recorded leader's sends,
// first, the events its filter passes up to the recorded end: another set
// of events, so another webhook-id (README, "HTTP sink": deduplicate by
// position to cover this case), and then nothing past the recorded end is
// missed or repeated.
func TestPGHTTPSinkChangedEventTypesAfterFailoverSendsTheFilteredRangeUnderANewID(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 4, 4, "A")
	tb.appendEvents(t, 4, 4, "B")
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
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 100, EventTypes: []string{"A", "B"}})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	require.ErrorIs(t, runner.Run(tb.ctx, p, tb.httpBackend(t, cfg, "node-a")), runner.ErrDeposed)
	require.Len(t, recv.Requests()[0].Positions, 8)

	tb.appendEvents(t, 2, 2, "A") // past the recorded end
	cfg2 := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 100, EventTypes: []string{"A"}})
	p2 := ProjectorOf(cfg2.Projectors[0], cfg2, tb.log, nil)
	ctx, cancel := context.WithCancel(tb.ctx)
	done := start(ctx, p2, tb.httpBackend(t, cfg2, "node-b"))
	tb.waitCaughtUp(t, "hooks")
	cancel()
	require.NoError(t, <-done)
	reqs := recv.Requests()
	for _, q := range reqs {
		t.Logf("request %d id %s positions %v status %d", q.N, q.ID, q.Positions, q.Status)
	}
	require.Len(t, reqs, 3)
	require.Equal(t, reqs[0].Positions[:4], reqs[1].Positions, "the A events up to the recorded end, alone")
	require.NotEqual(t, reqs[0].ID, reqs[1].ID, "another set of events, another id")
	require.Len(t, reqs[2].Positions, 2, "then the events after the recorded end")
}
