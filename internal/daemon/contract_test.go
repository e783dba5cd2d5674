package daemon

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// contract is what the shared suite needs from a backend implementation.
// Both implementations are given the same sinks:
//   - projector "c" handles types A and B (recorded, counted by applied)
//     and Poison (which fails on every event), not Z;
//   - projector "k" has a handler that fails for every event alike.
//
// Where the backends legitimately differ, the suite does not look: error
// texts (the memory sinks say what the SQL ones would, in their own words),
// sink fingerprints (store.SQLSink.Fingerprint against
// memtest.Fingerprint), and how soon Head sees a commit (at once in memory,
// at the watcher's next poll on PostgreSQL: the suite polls).
type contract struct {
	a, b runner.Backend // two replicas of one store, with the same sinks
	// other is a third replica whose sink for "c" differs (another
	// fingerprint), as after a deploy of changed handlers.
	other      func(t *testing.T) runner.Backend
	appendN    func(t *testing.T, n int, typ string) // in one transaction
	loseLeases func(t *testing.T, b runner.Backend)
	applied    func(t *testing.T) int // events applied by projector c's sink
	// checkpoint returns the projector's checkpoint (zero if none); it may
	// be polled.
	checkpoint func(projector string) store.Checkpoint
	// deadLetters returns the projector's dead letters by position.
	deadLetters func(t *testing.T, projector string) map[int64]recordedDeadLetter
	resume      func(t *testing.T, projector string) bool // as `projectord resume`
}

// recordedDeadLetter is what both backends record of a dead letter.
type recordedDeadLetter struct {
	Error    string
	Attempts int
}

// contractSink is the memory twin of projector c's SQL sink: it handles A,
// B and Poison (a memtest.FilterSink), counts what it applies, and fails on
// every Poison event, applying nothing of the batch.
type contractSink struct {
	mu sync.Mutex
	n  int
}

func (s *contractSink) Handles(eventType string) bool {
	return eventType == "A" || eventType == "B" || eventType == "Poison"
}

func (s *contractSink) Apply(events []store.Event) error {
	for i := range events {
		if events[i].Type == "Poison" {
			return &store.ApplyError{Index: i, Err: errors.New(`null value in column "position" violates not-null constraint`)}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n += len(events)
	return nil
}

func (s *contractSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// brokenSink is the memory twin of projector k's SQL sink: its handler
// fails for every event alike, which its check tells (a memtest.CheckedSink).
type brokenSink struct{}

var errNoTable = store.StatementProblem{EventType: "*", Err: errors.New(`relation "no_such_table" does not exist`)}

func (brokenSink) Apply([]store.Event) error { return errNoTable }
func (brokenSink) Check() error              { return errNoTable }

func memoryContract(t *testing.T) *contract {
	mem := memtest.New()
	sink := &contractSink{}
	mem.SetSink("c", sink)
	mem.SetSink("k", brokenSink{})
	return &contract{
		a: mem.Node("a"), b: mem.Node("b"),
		other: func(t *testing.T) runner.Backend { return mem.Node("o").WithSink("memory-changed") },
		appendN: func(t *testing.T, n int, typ string) {
			tx := mem.Begin()
			for i := 0; i < n; i++ {
				tx.Append("s", typ, "{}")
			}
			tx.Commit()
		},
		loseLeases: func(t *testing.T, b runner.Backend) { mem.LoseLeases(b.(*memtest.Node).Name()) },
		applied:    func(t *testing.T) int { return sink.count() },
		checkpoint: func(projector string) store.Checkpoint { c, _ := mem.Checkpoint(projector); return c },
		deadLetters: func(t *testing.T, projector string) map[int64]recordedDeadLetter {
			out := map[int64]recordedDeadLetter{}
			for _, dl := range mem.DeadLetters(projector) {
				out[dl.Event.Position] = recordedDeadLetter{Error: dl.Error, Attempts: dl.Attempts}
			}
			return out
		},
		resume: func(t *testing.T, projector string) bool { return mem.Resume(projector) },
	}
}

// contractHandlers are projector c's handlers on PostgreSQL; Poison fails
// on every event (applied.position is NOT NULL).
func contractHandlers() map[string]string {
	const record = `INSERT INTO applied (projector, position) VALUES ('c', @position)`
	return map[string]string{"A": record, "B": record,
		"Poison": `INSERT INTO applied (projector, position) VALUES ('c', nullif(@position, @position))`}
}

func postgresContract(t *testing.T) *contract {
	tb := setupPG(t)
	cfg := tb.config(t,
		config.Projector{Name: "c", Sink: config.Sink{SQL: &config.SQLSink{Handlers: contractHandlers()}}},
		config.Projector{Name: "k", Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{
			"*": `INSERT INTO no_such_table (position) VALUES (@position)`}}}})
	target := store.NewTarget(tb.pool, 30*time.Second)
	return &contract{
		a: tb.backend(t, cfg, "a"), b: tb.backend(t, cfg, "b"),
		other: func(t *testing.T) runner.Backend {
			return tb.backend(t, tb.config(t, config.Projector{Name: "c"}), "o") // records every type
		},
		appendN: func(t *testing.T, n int, typ string) { tb.appendEvents(t, n, n, typ) },
		loseLeases: func(t *testing.T, b runner.Backend) {
			_, err := tb.pool.Exec(tb.ctx, `SELECT pg_terminate_backend($1)`, int(b.(*runner.PGBackend).Session.PID()))
			require.NoError(t, err)
		},
		applied: func(t *testing.T) (n int) {
			require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM applied WHERE projector = 'c'`).Scan(&n))
			return n
		},
		checkpoint: tb.peek,
		deadLetters: func(t *testing.T, projector string) map[int64]recordedDeadLetter {
			out := map[int64]recordedDeadLetter{}
			for pos, dl := range deadLetters(t, tb, projector) {
				out[pos] = recordedDeadLetter{Error: dl.Error, Attempts: dl.Attempts}
			}
			return out
		},
		resume: func(t *testing.T, projector string) bool {
			was, err := target.Resume(tb.ctx, projector)
			require.NoError(t, err)
			return was
		},
	}
}

// TestBackendContract runs one suite against both backends, so the fast
// in-memory loop tests stand for the real thing.
func TestBackendContract(t *testing.T) {
	t.Parallel()
	for name, mk := range map[string]func(*testing.T) *contract{"memory": memoryContract, "postgres": postgresContract} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range []struct {
				name string
				run  func(*testing.T, *contract)
			}{
				{"leadership", testLeadershipContract},
				{"reads", testReadContract},
				{"fencing", testFencingContract},
				{"fenced status and halt", testFencedWritesContract},
				{"handles", testHandlesContract},
				{"apply error", testApplyErrorContract},
				{"dead letter", testDeadLetterContract},
				{"halt and resume", testHaltContract},
				{"sink check", testSinkCheckContract},
			} {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, mk(t))
				})
			}
		})
	}
}

// readAll waits until n events are readable and returns them.
func (c *contract) readAll(t *testing.T, n int) []store.Event {
	t.Helper()
	var events []store.Event
	require.Eventually(t, func() bool {
		var err error
		events, err = c.a.Read(t.Context(), store.Cursor{}, store.Filter{}, 100, nil)
		return err == nil && len(events) == n
	}, 10*time.Second, 5*time.Millisecond, "%d events readable", n)
	return events
}

// contractProjector is a projector of the suite as the loop runs it.
func contractProjector(t *testing.T, name string) runner.Projector {
	return runner.Projector{Name: name, BatchSize: 2, FlushInterval: 10 * time.Millisecond, Logger: zaptest.NewLogger(t),
		Policy: runner.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.ThenHalt}}
}

func waitDone(t *testing.T, l runner.Lease) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease did not end")
	}
}

func testLeadershipContract(t *testing.T, c *contract) {
	ctx := t.Context()
	la, err := c.a.TryAcquire(ctx, "c")
	require.NoError(t, err)
	_, err = c.b.TryAcquire(ctx, "c")
	require.ErrorIs(t, err, runner.ErrNotLeader)

	turn := c.b.Turn()
	require.NoError(t, la.Release(ctx))
	waitDone(t, la)
	select {
	case <-turn:
	case <-time.After(5 * time.Second):
		t.Fatal("release did not give standbys a turn")
	}
	lb, err := c.b.TryAcquire(ctx, "c")
	require.NoError(t, err)

	c.loseLeases(t, c.b)
	waitDone(t, lb)
	require.Error(t, lb.Err())
	require.Eventually(t, func() bool {
		l, err := c.a.TryAcquire(ctx, "c")
		if err == nil {
			_ = l.Release(ctx)
		}
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "a lost lease frees the lock")
}

func testReadContract(t *testing.T, c *contract) {
	ctx := t.Context()
	c.appendN(t, 5, "A")
	c.appendN(t, 5, "B")
	var head store.Cursor
	require.Eventually(t, func() bool {
		head, _ = c.a.Head()
		all, err := c.a.Read(ctx, store.Cursor{}, store.Filter{}, 100, nil)
		return err == nil && len(all) == 10 && head == all[9].Cursor
	}, 10*time.Second, 5*time.Millisecond, "head and reads reach every committed event")

	page, err := c.a.Read(ctx, store.Cursor{}, store.Filter{}, 3, nil)
	require.NoError(t, err)
	require.Len(t, page, 3)
	rest, err := c.a.Read(ctx, page[2].Cursor, store.Filter{}, 100, nil)
	require.NoError(t, err)
	require.Len(t, rest, 7)
	require.True(t, page[2].Cursor.Less(rest[0].Cursor))
	bs, err := c.a.Read(ctx, store.Cursor{}, store.Filter{EventTypes: []string{"B"}}, 100, nil)
	require.NoError(t, err)
	require.Len(t, bs, 5)
	for _, e := range bs {
		require.Equal(t, "B", e.Type)
	}
}

func testFencingContract(t *testing.T, c *contract) {
	ctx := t.Context()
	c.appendN(t, 4, "A")
	var events []store.Event
	require.Eventually(t, func() bool {
		var err error
		events, err = c.a.Read(ctx, store.Cursor{}, store.Filter{}, 100, nil)
		return err == nil && len(events) == 4
	}, 10*time.Second, 5*time.Millisecond)

	ca, err := c.a.Claim(ctx, "c")
	require.NoError(t, err)
	require.NoError(t, c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, To: events[1].Cursor, Events: events[:2]}))
	require.Equal(t, 2, c.applied(t))

	cb, err := c.b.Claim(ctx, "c")
	require.NoError(t, err)
	require.Greater(t, cb.Epoch, ca.Epoch)
	require.Equal(t, events[1].Cursor, cb.Cursor, "the new leader resumes at the checkpoint")

	err = c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, From: events[1].Cursor, To: events[3].Cursor, Events: events[2:]})
	require.ErrorIs(t, err, store.ErrFenced, "the old leader is fenced")
	require.ErrorIs(t, c.a.SetStatus(ctx, "c", ca.Epoch, store.StatusHalted, "x"), store.ErrFenced)
	err = c.b.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cb.Epoch, From: store.Cursor{}, To: events[3].Cursor, Events: events[2:]})
	require.ErrorIs(t, err, store.ErrFenced, "a commit from a stale cursor is fenced")
	require.Equal(t, 2, c.applied(t), "fenced commits apply nothing")

	require.NoError(t, c.b.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cb.Epoch, From: events[1].Cursor, To: events[3].Cursor, Events: events[2:]}))
	require.Equal(t, 4, c.applied(t))
	require.NoError(t, c.b.SetStatus(ctx, "c", cb.Epoch, store.StatusRunning, ""))
	again, err := c.a.Claim(context.WithoutCancel(ctx), "c")
	require.NoError(t, err)
	require.Equal(t, events[3].Cursor, again.Cursor)
}

// testFencedWritesContract: a deposed leader's status and halt are fenced
// and record nothing; so is a write under an epoch no claim gave.
func testFencedWritesContract(t *testing.T, c *contract) {
	ctx := t.Context()
	ca, err := c.a.Claim(ctx, "c")
	require.NoError(t, err)
	cb, err := c.b.Claim(ctx, "c")
	require.NoError(t, err)
	require.NoError(t, c.b.SetStatus(ctx, "c", cb.Epoch, store.StatusRunning, "retrying: the leader's note"))

	require.ErrorIs(t, c.a.SetStatus(ctx, "c", ca.Epoch, store.StatusHalted, "the deposed one's note"), store.ErrFenced)
	require.ErrorIs(t, c.a.Halt(ctx, "c", ca.Epoch, nil, "the deposed one's halt"), store.ErrFenced)
	cp := c.checkpoint("c")
	require.Equal(t, cb.Epoch, cp.Epoch)
	require.Equal(t, "b", cp.LeaderNode)
	require.Equal(t, store.StatusRunning, cp.Status, "a fenced write changes no status")
	require.Equal(t, "retrying: the leader's note", cp.LastError, "nor last_error")
	require.Nil(t, cp.Halt, "a fenced halt is no halt")
	_, err = c.a.Claim(ctx, "c")
	require.NoError(t, err, "nothing refuses the next claim")

	// A projector no replica has claimed has no epoch to write under.
	require.ErrorIs(t, c.a.Halt(ctx, "k", 1, nil, "x"), store.ErrFenced)
	require.ErrorIs(t, c.a.SetStatus(ctx, "k", 1, store.StatusHalted, "x"), store.ErrFenced)
}

// testHandlesContract: the backend says which event types the sink
// handles, a commit applies only those (and moves past the others), and
// the loop passes over the others like filtered-out events: only events a
// handler ran for count as applied.
func testHandlesContract(t *testing.T, c *contract) {
	ctx := t.Context()
	f, ok := c.a.(runner.SinkFilter)
	require.True(t, ok, "the backend implements runner.SinkFilter")
	require.True(t, f.Handles("c", "A"))
	require.True(t, f.Handles("c", "Poison"))
	require.False(t, f.Handles("c", "Z"), "no handler for Z")

	c.appendN(t, 2, "A")
	c.appendN(t, 4, "Z")
	c.appendN(t, 2, "B")
	c.appendN(t, 3, "Z")
	events := c.readAll(t, 11)
	last := events[10].Cursor

	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := start(cctx, contractProjector(t, "c"), c.a)
	require.Eventually(t, func() bool { return c.checkpoint("c").Cursor == last }, 30*time.Second, 5*time.Millisecond,
		"the checkpoint moves past the events no handler takes, to the last one")
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, int64(4), c.checkpoint("c").EventsApplied, "only events a handler ran for count as applied")
	require.Equal(t, 4, c.applied(t))

	// A commit straight to the backend skips what no handler takes, too.
	c.appendN(t, 1, "Z")
	c.appendN(t, 1, "A")
	more := c.readAll(t, 13)[11:]
	cp, err := c.b.Claim(ctx, "c")
	require.NoError(t, err)
	require.NoError(t, c.b.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cp.Epoch, From: last, To: more[1].Cursor, Events: more}))
	require.Equal(t, 5, c.applied(t))
	require.Equal(t, more[1].Cursor, c.checkpoint("c").Cursor)
}

// testApplyErrorContract: a sink failing on an event fails the whole
// commit with a *store.ApplyError naming that event by its index in the
// request (events no handler takes included), charged to the event, and
// nothing of the batch is applied or moved.
func testApplyErrorContract(t *testing.T, c *contract) {
	ctx := t.Context()
	c.appendN(t, 1, "Z")
	c.appendN(t, 1, "A")
	c.appendN(t, 1, "Poison")
	c.appendN(t, 1, "A")
	events := c.readAll(t, 4)
	cp, err := c.a.Claim(ctx, "c")
	require.NoError(t, err)

	err = c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cp.Epoch, To: events[3].Cursor, Events: events})
	var ae *store.ApplyError
	require.ErrorAs(t, err, &ae)
	require.Equal(t, 2, ae.Index, "the error names the Poison event")
	require.True(t, store.Classify(err).CountsAgainstEvent(), "the failure is the event's: %v", err)
	require.Zero(t, c.applied(t), "nothing of the failed batch is applied")
	after := c.checkpoint("c")
	require.True(t, after.Cursor.IsZero(), "the checkpoint stays")
	require.Zero(t, after.EventsApplied)

	// The events before it commit; the event alone fails again.
	require.NoError(t, c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cp.Epoch, To: events[1].Cursor, Events: events[:2]}))
	require.Equal(t, 1, c.applied(t))
	err = c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cp.Epoch, From: events[1].Cursor, To: events[2].Cursor, Events: events[2:3]})
	require.ErrorAs(t, err, &ae)
	require.Zero(t, ae.Index)
	require.Equal(t, events[1].Cursor, c.checkpoint("c").Cursor)
}

// testDeadLetterContract: a dead letter is recorded with the commit that
// skips its event, all or nothing and fenced like any commit.
func testDeadLetterContract(t *testing.T, c *contract) {
	ctx := t.Context()
	c.appendN(t, 1, "A")
	c.appendN(t, 1, "Poison")
	c.appendN(t, 1, "A")
	events := c.readAll(t, 3)
	ca, err := c.a.Claim(ctx, "c")
	require.NoError(t, err)
	require.NoError(t, c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, To: events[0].Cursor, Events: events[:1]}))

	// A commit that fails records its dead letter no more than its events.
	err = c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, From: events[0].Cursor, To: events[2].Cursor,
		Events: events[1:], DeadLetter: &store.DeadLetter{Event: events[1], Error: "never recorded", Attempts: 1}})
	require.Error(t, err)
	require.Empty(t, c.deadLetters(t, "c"), "a failed commit records no dead letter")

	dl := &store.DeadLetter{Event: events[1], Error: "failed 3 times: boom", Attempts: 3}
	require.NoError(t, c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, From: events[0].Cursor, To: events[1].Cursor, DeadLetter: dl}))
	require.Equal(t, events[1].Cursor, c.checkpoint("c").Cursor, "the batch that records the dead letter skips its event")
	require.Equal(t, map[int64]recordedDeadLetter{events[1].Position: {Error: "failed 3 times: boom", Attempts: 3}}, c.deadLetters(t, "c"))

	// A deposed leader records none.
	cb, err := c.b.Claim(ctx, "c")
	require.NoError(t, err)
	err = c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, From: events[1].Cursor, To: events[2].Cursor,
		DeadLetter: &store.DeadLetter{Event: events[2], Error: "deposed", Attempts: 3}})
	require.ErrorIs(t, err, store.ErrFenced)
	require.Len(t, c.deadLetters(t, "c"), 1, "a fenced commit records no dead letter")

	require.NoError(t, c.b.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cb.Epoch, From: events[1].Cursor, To: events[2].Cursor, Events: events[2:]}))
	require.Equal(t, 2, c.applied(t))
	require.Equal(t, int64(2), c.checkpoint("c").EventsApplied, "a dead letter is not an applied event")
}

// testHaltContract: a halt is recorded under the leader's epoch, on its
// event, and from then on refuses the claims of replicas with the same
// sink, leaving the epoch, until a resume ends it; a replica with another
// sink ends it by claiming.
func testHaltContract(t *testing.T, c *contract) {
	ctx := t.Context()
	c.appendN(t, 1, "A")
	events := c.readAll(t, 1)
	ca, err := c.a.Claim(ctx, "c")
	require.NoError(t, err)
	require.NoError(t, c.a.Halt(ctx, "c", ca.Epoch, &events[0].Cursor, "event failed 3 times"))

	cp := c.checkpoint("c")
	require.Equal(t, store.StatusHalted, cp.Status)
	require.Equal(t, "event failed 3 times", cp.LastError)
	require.NotNil(t, cp.Halt)
	require.Equal(t, "a", cp.Halt.By)
	require.Equal(t, &events[0].Cursor, cp.Halt.Event)
	require.NotEmpty(t, cp.Halt.Sink, "recorded under the sink's fingerprint")
	for _, r := range []runner.Backend{c.a, c.b} {
		_, err := r.Claim(ctx, "c")
		require.ErrorIs(t, err, store.ErrProjectorHalted)
		var he *store.HaltedError
		require.ErrorAs(t, err, &he)
		require.Equal(t, "a", he.Checkpoint.Halt.By)
	}
	require.Equal(t, ca.Epoch, c.checkpoint("c").Epoch, "a refused claim leaves the epoch")
	err = runner.Run(ctx, contractProjector(t, "c"), c.b)
	require.ErrorIs(t, err, runner.ErrHalted, "the loop has nothing to lead")
	l, err := c.a.TryAcquire(ctx, "c")
	require.NoError(t, err, "and holds no lock")
	require.NoError(t, l.Release(ctx))

	require.True(t, c.resume(t, "c"))
	require.False(t, c.resume(t, "c"), "resuming a projector that is not halted changes nothing")
	cb, err := c.b.Claim(ctx, "c")
	require.NoError(t, err, "a resume ends the halt")
	require.Greater(t, cb.Epoch, ca.Epoch)
	require.Equal(t, store.StatusRunning, cb.Status)
	require.Empty(t, cb.LastError)
	require.Nil(t, cb.Halt)

	// A halt on no event (a handler that fails for every event), ended by
	// a replica whose sink differs.
	require.NoError(t, c.b.Halt(ctx, "c", cb.Epoch, nil, "handler fails for every event"))
	_, err = c.a.Claim(ctx, "c")
	require.ErrorIs(t, err, store.ErrProjectorHalted)
	require.Nil(t, c.checkpoint("c").Halt.Event)
	co, err := c.other(t).Claim(ctx, "c")
	require.NoError(t, err, "another sink ends the halt")
	require.Equal(t, store.StatusRunning, co.Status)
	require.Empty(t, co.LastError)
	require.Nil(t, co.Halt)
	require.Greater(t, co.Epoch, cb.Epoch)
}

// testSinkCheckContract: the backend checks a sink without applying
// anything, and the loop halts on one that fails for every event at the
// start of leadership, on no event.
func testSinkCheckContract(t *testing.T, c *contract) {
	ctx := t.Context()
	sc, ok := c.a.(runner.SinkChecker)
	require.True(t, ok, "the backend implements runner.SinkChecker")
	require.NoError(t, sc.CheckSink(ctx, "c"))
	require.ErrorIs(t, sc.CheckSink(ctx, "k"), store.ErrBadHandler)

	c.appendN(t, 2, "A")
	c.readAll(t, 2)
	err := runner.Run(ctx, contractProjector(t, "k"), c.a)
	require.ErrorIs(t, err, runner.ErrHalted)
	cp := c.checkpoint("k")
	require.Equal(t, store.StatusHalted, cp.Status)
	require.NotNil(t, cp.Halt)
	require.Nil(t, cp.Halt.Event, "no event is charged")
	require.True(t, cp.Cursor.IsZero(), "nothing was read")
	_, err = c.b.Claim(ctx, "k")
	require.ErrorIs(t, err, store.ErrProjectorHalted)
}
