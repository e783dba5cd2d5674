package runner_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// reasonLog counts the observer's error reasons.
type reasonLog struct {
	runner.NopObserver
	mu sync.Mutex
	n  map[string]int
}

func (o *reasonLog) Error(_, reason string, _ error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]int{}
	}
	o.n[reason]++
}

func (o *reasonLog) count(reason string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[reason]
}

// batchHolds reports whether events contains the event at position pos.
func batchHolds(events []store.Event, pos int64) bool {
	for i := range events {
		if events[i].Position == pos {
			return true
		}
	}
	return false
}

// TestEventErrorsReachThePolicy: every error that is the event's fault (or
// that nothing places) counts against the event and, after max_attempts,
// ends in the policy; every other event is applied exactly once.
func TestEventErrorsReachThePolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ code, msg string }{
		{"21000", "more than one row returned by a subquery used as an expression"},
		{"54000", "index row size 12848 exceeds btree version 4 maximum 2704"},
		{"P0002", "query returned no rows"},
		{"P0003", "query returned more than one row"},
		{"P0004", "assertion failed"},
		{"44000", `new row violates check option for view "v"`},
		{"42501", `new row violates row-level security policy for table "rm"`},
		{"27000", "tuple to be updated was already modified by an operation triggered by the current command"},
		{"22P02", "invalid input syntax for type integer"},
		{"23505", "duplicate key value violates unique constraint"},
		{"P0001", "raised by the handler"},
		{"XX000", "an error nothing places"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			tb := setupMem(t)
			obs := &reasonLog{}
			tb.p.Observer, tb.p.Policy.Then = obs, runner.ThenDeadLetter
			for i := 0; i < 20; i++ {
				tb.mem.AppendCommitted("s", "A", "{}")
			}
			tb.sink.failOn = func(e *store.Event) error {
				if e.Position == 7 {
					return &pgconn.PgError{Severity: "ERROR", Code: tc.code, Message: tc.msg}
				}
				return nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := start(ctx, tb.p, tb.mem.Node("a"))
			waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 20 })
			cancel()
			require.NoError(t, <-done)

			dl := tb.mem.DeadLetters("p")
			require.Len(t, dl, 1)
			require.Equal(t, int64(7), dl[0].Event.Position)
			require.Equal(t, 3, dl[0].Attempts)
			require.Contains(t, dl[0].Error, tc.msg)
			require.Contains(t, dl[0].Error, tc.code)
			require.Equal(t, 19, tb.sink.count())
			require.NotContains(t, tb.sink.positions(), int64(7))
			require.Empty(t, tb.sink.duplicates())
			require.Equal(t, 2, obs.count("apply"), "two retries after the first failure")
			require.Equal(t, 1, obs.count("poison"))
			c, _ := tb.mem.Checkpoint("p")
			require.True(t, strings.HasPrefix(c.LastError, "dead-lettered "), c.LastError)
		})
	}
}

// TestDatabaseFaultsAreRetriedVisibly: an error that would fail for every
// event alike is retried without counting against any event, far past
// max_attempts, and shows in last_error and the metric while it lasts.
func TestDatabaseFaultsAreRetriedVisibly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ code, msg string }{
		{"42P01", `relation "rm" does not exist`},
		{"42501", "permission denied for table rm"},
		{"0A000", "feature not supported"},
		{"25006", "cannot execute INSERT in a read-only transaction"},
		{"2D000", "invalid transaction termination"},
		{"3F000", `schema "rm" does not exist`},
		{"55006", "object in use"},
		{"28000", "invalid authorization"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			t.Parallel()
			tb := setupMem(t)
			obs := &reasonLog{}
			tb.p.Observer, tb.p.Policy.Then = obs, runner.ThenSkip
			for i := 0; i < 20; i++ {
				tb.mem.AppendCommitted("s", "A", "{}")
			}
			var outage atomic.Bool
			outage.Store(true)
			tb.sink.failOn = func(e *store.Event) error {
				if e.Position == 7 && outage.Load() {
					return &pgconn.PgError{Severity: "ERROR", Code: tc.code, Message: tc.msg}
				}
				return nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := start(ctx, tb.p, tb.mem.Node("a"))
			// Far more failures than max_attempts (3), reported as the
			// database's, with the error in last_error.
			require.Eventually(t, func() bool { return obs.count("database") >= 10 }, 10*time.Second, time.Millisecond,
				"the failure is never reported as the database's")
			c := waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return strings.HasPrefix(c.LastError, "retrying: ") })
			require.Contains(t, c.LastError, tc.msg)
			require.Zero(t, c.Cursor.Position, "nothing committed, nothing skipped")
			require.Zero(t, obs.count("apply")+obs.count("poison"), "never charged to the event")

			outage.Store(false)
			c = waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 20 && c.LastError == "" })
			cancel()
			require.NoError(t, <-done)
			require.Equal(t, 20, tb.sink.count())
			require.Empty(t, tb.sink.duplicates())
			require.Empty(t, tb.mem.DeadLetters("p"))
		})
	}
}

// TestBatchFailingWithoutNamingAnEventIsSplit: a deferred constraint fails
// at commit and a batch out of time is cut wherever it was, so neither
// names its event. The batch is split until the event is alone, which then
// follows the policy; every other event is applied exactly once.
func TestBatchFailingWithoutNamingAnEventIsSplit(t *testing.T) {
	t.Parallel()
	deferred := &pgconn.PgError{Severity: "ERROR", Code: "23503", Message: `insert or update on table "child" violates foreign key constraint "child_ref_fkey"`}
	for _, tc := range []struct {
		name string
		then runner.Then
		err  error
	}{
		{"deferred constraint", runner.ThenDeadLetter, fmt.Errorf("error committing batch of p: %w", deferred)},
		{"unplaced error at commit", runner.ThenSkip, &pgconn.PgError{Severity: "ERROR", Code: "XX000", Message: "an error nothing places"}},
		{"statement timeout", runner.ThenSkip, &store.ApplyError{Index: 0, Err: &pgconn.PgError{Severity: "ERROR", Code: "57014", Message: "canceling statement due to statement timeout"}}},
		{"halt", runner.ThenHalt, fmt.Errorf("error committing batch of p: %w", deferred)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tb := setupMem(t)
			obs := &reasonLog{}
			tb.p.Observer, tb.p.Policy.Then = obs, tc.then
			tb.p.BatchSize = 40
			tx := tb.mem.Begin()
			for i := 0; i < 45; i++ {
				tx.Append(fmt.Sprintf("s-%d", i), "A", "{}")
			}
			tx.Commit()
			tb.sink.failBatch = func(events []store.Event) error {
				if batchHolds(events, 23) {
					return tc.err
				}
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			done := start(ctx, tb.p, tb.mem.Node("a"))
			if tc.then == runner.ThenHalt {
				require.ErrorIs(t, <-done, runner.ErrHalted)
				c, _ := tb.mem.Checkpoint("p")
				require.Equal(t, int64(22), c.Cursor.Position, "halts just before the failing event")
				require.Equal(t, store.StatusHalted, c.Status)
				require.Contains(t, c.LastError, "child_ref_fkey")
				require.Equal(t, 22, tb.sink.count())
				require.Empty(t, tb.sink.duplicates())
				return
			}
			waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 45 })
			cancel()
			require.NoError(t, <-done)
			require.Equal(t, 44, tb.sink.count())
			require.NotContains(t, tb.sink.positions(), int64(23))
			require.Empty(t, tb.sink.duplicates())
			// 40 -> 20 -> 10 -> 5 -> 2 or 3 -> 1: a split per halving, no more.
			require.Positive(t, obs.count("shrink"))
			require.LessOrEqual(t, obs.count("shrink"), 6)
			require.Equal(t, 2, obs.count("apply"))
			dl := tb.mem.DeadLetters("p")
			if tc.then == runner.ThenDeadLetter {
				require.Len(t, dl, 1)
				require.Equal(t, int64(23), dl[0].Event.Position)
				require.Equal(t, 3, dl[0].Attempts)
			} else {
				require.Empty(t, dl)
				c, _ := tb.mem.Checkpoint("p")
				require.True(t, strings.HasPrefix(c.LastError, "skipped "), c.LastError)
			}
		})
	}
}

// TestNoAnswerIsSplitButNeverCharged: a batch whose commit meets our own
// deadline with no answer from the server is split (it may just be too big
// for its deadline), but the single event that still meets it is the
// server's or the network's stall, not the event's fault: it is retried,
// never dead-lettered, and applied once the stall ends.
func TestNoAnswerIsSplitButNeverCharged(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	obs := &reasonLog{}
	tb.p.Observer, tb.p.Policy.Then, tb.p.BatchSize = obs, runner.ThenDeadLetter, 40
	tx := tb.mem.Begin()
	for i := 0; i < 45; i++ {
		tx.Append(fmt.Sprintf("s-%d", i), "A", "{}")
	}
	tx.Commit()
	var mu sync.Mutex
	alone := 0 // attempts of event 23 on its own
	tb.sink.failBatch = func(events []store.Event) error {
		if !batchHolds(events, 23) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if len(events) == 1 {
			alone++
		}
		if alone > 3*tb.p.Policy.MaxAttempts {
			return nil // the stall is over
		}
		return fmt.Errorf("error committing batch of p: %w", context.DeadlineExceeded)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := start(ctx, tb.p, tb.mem.Node("a"))
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 45 })
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 45, tb.sink.count(), "every event applied, the stalled one too")
	require.Empty(t, tb.sink.duplicates())
	require.Empty(t, tb.mem.DeadLetters("p"))
	require.Positive(t, obs.count("shrink"))
	require.Zero(t, obs.count("apply"), "no attempt was charged to the event")
	require.Zero(t, obs.count("poison"))
}

// TestGracefulStopEndsPoisonRetries: a stop does not wait out a poison
// event's backoff (here at least half an hour) and applies no policy: the
// next leader re-reads the event from the checkpoint.
func TestGracefulStopEndsPoisonRetries(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	obs := &reasonLog{}
	tb.p.Observer = obs
	tb.p.Policy = runner.ErrorPolicy{MaxAttempts: 1000, Initial: time.Hour, Max: time.Hour, Then: runner.ThenDeadLetter}
	for i := 0; i < 5; i++ {
		tb.mem.AppendCommitted("s", "A", "{}")
	}
	tb.sink.failOn = poisonAt(3)
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, tb.mem.Node("a"))
	// The events before it are committed, then the event fails alone and
	// its retry is recorded before the backoff: the observer hears of the
	// failure before last_error is written, so wait for the checkpoint row.
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool {
		return c.Cursor.Position == 2 && strings.HasPrefix(c.LastError, "retrying: ")
	})
	require.Equal(t, 1, obs.count("apply"))

	stopped := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("a graceful stop waited for the poison event's backoff")
	}
	t.Logf("stopped in %s", time.Since(stopped))
	c, _ := tb.mem.Checkpoint("p")
	require.Equal(t, int64(2), c.Cursor.Position, "nothing past the poison event committed")
	require.True(t, strings.HasPrefix(c.LastError, "retrying: "), "the retry showed in last_error: %q", c.LastError)
	require.Contains(t, c.LastError, "failed 1 of at most 1000 times: poison at 3")
	require.Empty(t, tb.mem.DeadLetters("p"), "a stop applies no policy")
	require.Zero(t, obs.count("poison"))
	require.Equal(t, "", tb.mem.Leader("p"), "the lease is released")

	// The next leader starts on the event again.
	tb.sink.failOn = nil
	ctx, cancel = context.WithCancel(context.Background())
	done = start(ctx, tb.p, tb.mem.Node("b"))
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 5 && c.LastError == "" })
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 5, tb.sink.count())
	require.Empty(t, tb.sink.duplicates())
}

// statusCounter counts a backend's status writes.
type statusCounter struct {
	*memtest.Node
	n atomic.Int32
}

func (s *statusCounter) SetStatus(ctx context.Context, projector string, epoch int64, status, lastErr string) error {
	s.n.Add(1)
	return s.Node.SetStatus(ctx, projector, epoch, status, lastErr)
}

// TestRetryNotesArePaced: a hot retry loop reports every failure to the
// observer but writes last_error once, refreshing it only every few
// seconds, and clears it once when the batch gets through.
func TestRetryNotesArePaced(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	obs := &reasonLog{}
	tb.p.Observer = obs
	tb.mem.AppendCommitted("s", "A", "{}", "{}", "{}")
	var outage atomic.Bool
	outage.Store(true)
	tb.sink.failOn = func(e *store.Event) error {
		if outage.Load() {
			return &pgconn.PgError{Severity: "ERROR", Code: "42P01", Message: `relation "rm" does not exist`}
		}
		return nil
	}
	b := &statusCounter{Node: tb.mem.Node("a")}
	began := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, b)
	require.Eventually(t, func() bool { return obs.count("database") >= 100 }, 30*time.Second, time.Millisecond)
	outage.Store(false)
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 3 && c.LastError == "" })
	cancel()
	require.NoError(t, <-done)
	// One note, a refresh per statusEvery, one clear.
	allowed := 2 + int(time.Since(began)/(5*time.Second)) // statusEvery
	require.LessOrEqual(t, int(b.n.Load()), allowed, "%d status writes for %d retries", b.n.Load(), obs.count("database"))
	require.GreaterOrEqual(t, int(b.n.Load()), 2, "noted and cleared")
}

// hangingDeadLetter hangs its first dead-letter commit until the commit's
// context ends, as a database that stops answering would.
type hangingDeadLetter struct {
	*memtest.Node
	hung atomic.Bool
}

func (h *hangingDeadLetter) Commit(ctx context.Context, req store.CommitRequest) error {
	if req.DeadLetter != nil && h.hung.CompareAndSwap(false, true) {
		<-ctx.Done()
		return fmt.Errorf("error recording dead letter: %w", ctx.Err())
	}
	return h.Node.Commit(ctx, req)
}

// TestDeadLetterCommitIsBoundedByCommitTimeout: a dead-letter commit runs
// under commit_timeout like every other commit, so a database that stops
// answering while it is recorded costs a retry from the checkpoint (the
// database's fault, never the event's), not a leader hung for good.
func TestDeadLetterCommitIsBoundedByCommitTimeout(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	obs := &reasonLog{}
	tb.p.Observer, tb.p.Policy.Then, tb.p.CommitTimeout = obs, runner.ThenDeadLetter, 500*time.Millisecond
	for i := 0; i < 5; i++ {
		tb.mem.AppendCommitted("s", "A", "{}")
	}
	tb.sink.failOn = poisonAt(3)
	b := &hangingDeadLetter{Node: tb.mem.Node("a")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := start(ctx, tb.p, b)
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 5 })
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return")
	}
	require.True(t, b.hung.Load(), "the first dead letter hung")
	dl := tb.mem.DeadLetters("p")
	require.Len(t, dl, 1)
	require.Equal(t, int64(3), dl[0].Event.Position)
	require.Equal(t, []int64{1, 2, 4, 5}, tb.sink.positions())
	require.Positive(t, obs.count("commit"), "the hung commit was retried as the database's fault")
	require.Equal(t, 1, obs.count("poison"), "the poison event is reported once, when its dead letter is recorded")
}
