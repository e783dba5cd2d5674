package runner_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

type memBundle struct {
	mem  *memtest.Memory
	sink *recordingSink
	p    runner.Projector
}

func setupMem(t *testing.T) *memBundle {
	t.Helper()
	mem := memtest.New()
	sink := &recordingSink{}
	mem.SetSink("p", sink)
	return &memBundle{mem: mem, sink: sink, p: runner.Projector{
		Name: "p", BatchSize: 50, Logger: zaptest.NewLogger(t),
		Policy: runner.ErrorPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.ThenHalt},
	}}
}

// start runs Run in the background and returns its result channel.
func start(ctx context.Context, p runner.Projector, b runner.Backend) <-chan error {
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx, p, b) }()
	return done
}

func waitCheckpoint(t *testing.T, mem *memtest.Memory, projector string, want func(store.Checkpoint) bool) store.Checkpoint {
	t.Helper()
	var last store.Checkpoint
	require.Eventually(t, func() bool {
		c, ok := mem.Checkpoint(projector)
		last = c
		return ok && want(c)
	}, 10*time.Second, time.Millisecond, "checkpoint never reached the expected state; last %+v", last)
	return last
}

func headOf(mem *memtest.Memory) store.Cursor {
	h, _ := mem.Node("x").Head()
	return h
}

func TestRunCatchesUpAndFollowsLive(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	for i := 0; i < 12; i++ {
		tb.mem.AppendCommitted(fmt.Sprintf("order-%d", i), "OrderPlaced", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, tb.mem.Node("a"))
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == headOf(tb.mem) })
	require.Equal(t, 120, tb.sink.count())

	tb.mem.AppendCommitted("order-live", "OrderPlaced", "{}", "{}")
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.EventsApplied == 122 })
	cancel()
	require.NoError(t, <-done)

	pos := tb.sink.positions()
	require.True(t, sort.SliceIsSorted(pos, func(i, j int) bool { return pos[i] < pos[j] }))
	require.Empty(t, tb.sink.duplicates())
	require.Equal(t, "", tb.mem.Leader("p"), "graceful stop releases the lease")
}

func TestRunWaitsForOlderOpenTransaction(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	slow := tb.mem.Begin()
	early := slow.Append("s-1", "A", "{}") // smaller position, commits last
	tb.mem.AppendCommitted("s-2", "A", "{}")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := start(ctx, tb.p, tb.mem.Node("a"))

	// The later transaction is committed but sits above the horizon.
	require.Never(t, func() bool { return tb.sink.count() > 0 }, 100*time.Millisecond, 5*time.Millisecond)
	slow.Commit()
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.EventsApplied == 2 })
	require.Contains(t, tb.sink.positions(), early)
	cancel()
	require.NoError(t, <-done)
}

func TestRunSkipsRolledBackEvents(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	tx := tb.mem.Begin()
	tx.Append("s", "A", "{}")
	tb.mem.AppendCommitted("s", "A", "{}")
	tx.Rollback()
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, tb.mem.Node("a"))
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == headOf(tb.mem) && !c.Cursor.IsZero() })
	require.Equal(t, []int64{2}, tb.sink.positions())
	cancel()
	require.NoError(t, <-done)
}

func TestRunFilterAdvancesPastOtherEvents(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	tb.p.Filter = store.Filter{EventTypes: []string{"Wanted"}, StreamPrefix: "order-"}
	tb.p.FlushInterval = 10 * time.Millisecond
	tb.mem.AppendCommitted("order-1", "Wanted", "{}")
	tb.mem.AppendCommitted("order-1", "Other", "{}")
	tb.mem.AppendCommitted("cart-1", "Wanted", "{}")
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, tb.mem.Node("a"))
	c := waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == headOf(tb.mem) })
	require.Equal(t, int64(1), c.EventsApplied)
	require.Equal(t, []int64{1}, tb.sink.positions())
	cancel()
	require.NoError(t, <-done)
}

func TestRunReturnsNotLeaderAtOnce(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, tb.mem.Node("a"))
	require.Eventually(t, func() bool { return tb.mem.Leader("p") == "a" }, 5*time.Second, time.Millisecond)
	err := runner.Run(context.Background(), tb.p, tb.mem.Node("b"))
	require.ErrorIs(t, err, runner.ErrNotLeader)
	cancel()
	require.NoError(t, <-done)
}

func TestRunStopsWhenLeaseLostAndIsFenced(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	for i := 0; i < 10; i++ {
		tb.mem.AppendCommitted("s", "A", "{}", "{}", "{}", "{}", "{}")
	}
	done := start(context.Background(), tb.p, tb.mem.Node("a"))
	require.Eventually(t, func() bool { return tb.mem.Leader("p") == "a" }, 5*time.Second, time.Millisecond)
	tb.mem.LoseLeases("a")
	select {
	case err := <-done:
		require.ErrorIs(t, err, runner.ErrLeaseLost)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its lease was lost")
	}
	ctx, cancel := context.WithCancel(context.Background())
	doneB := start(ctx, tb.p, tb.mem.Node("b"))
	c := waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == headOf(tb.mem) && c.LeaderNode == "b" })
	require.Equal(t, int64(50), c.EventsApplied)
	require.Empty(t, tb.sink.duplicates())
	require.Equal(t, 50, tb.sink.count())
	cancel()
	require.NoError(t, <-doneB)
}

func TestCommitUnderOldEpochIsFenced(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	tb.mem.AppendCommitted("s", "A", "{}")
	a, b := tb.mem.Node("a"), tb.mem.Node("b")
	ctx := context.Background()
	ca, err := a.Claim(ctx, "p")
	require.NoError(t, err)
	_, err = b.Claim(ctx, "p")
	require.NoError(t, err)
	err = a.Commit(ctx, store.CommitRequest{Projector: "p", Epoch: ca.Epoch, To: headOf(tb.mem)})
	require.ErrorIs(t, err, store.ErrFenced)
	require.Zero(t, tb.sink.count())
}

func TestPoisonPolicies(t *testing.T) {
	t.Parallel()
	for _, then := range []runner.Then{runner.ThenHalt, runner.ThenSkip, runner.ThenDeadLetter} {
		t.Run(string(then), func(t *testing.T) {
			t.Parallel()
			tb := setupMem(t)
			tb.p.Policy.Then = then
			for i := 0; i < 20; i++ {
				tb.mem.AppendCommitted("s", "A", "{}")
			}
			tb.sink.failOn = poisonAt(7)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := start(ctx, tb.p, tb.mem.Node("a"))
			if then != runner.ThenHalt {
				waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 20 })
				cancel()
			}
			err := <-done
			c, _ := tb.mem.Checkpoint("p")
			switch then {
			case runner.ThenHalt:
				require.ErrorIs(t, err, runner.ErrHalted)
				require.Equal(t, int64(6), c.Cursor.Position, "halts just before the poison event")
				require.Equal(t, store.StatusHalted, c.Status)
				require.Contains(t, c.LastError, "poison at 7")
				require.Equal(t, "", tb.mem.Leader("p"), "a halted projector releases its lock")
			case runner.ThenSkip, runner.ThenDeadLetter:
				require.NoError(t, err)
				require.Equal(t, int64(20), c.Cursor.Position)
				require.Equal(t, 19, tb.sink.count())
				require.NotContains(t, tb.sink.positions(), int64(7))
				dl := tb.mem.DeadLetters("p")
				if then == runner.ThenDeadLetter {
					require.Len(t, dl, 1)
					require.Equal(t, int64(7), dl[0].Event.Position)
					require.Equal(t, 3, dl[0].Attempts)
				} else {
					require.Empty(t, dl)
					require.Contains(t, c.LastError, "skipped")
				}
			}
			require.Empty(t, tb.sink.duplicates())
		})
	}
}

func TestSupervisorsElectOneLeaderAndHandOver(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	for i := 0; i < 30; i++ {
		tb.mem.AppendCommitted("s", "A", "{}", "{}", "{}")
	}
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	sa, sb := runner.NewSupervisor(tb.p, tb.mem.Node("a")), runner.NewSupervisor(tb.p, tb.mem.Node("b"))
	doneA, doneB := make(chan struct{}), make(chan struct{})
	go func() { sa.Run(ctxA); close(doneA) }()
	go func() { sb.Run(ctxB); close(doneB) }()

	require.Eventually(t, func() bool {
		return (sa.State() == runner.StateLeader) != (sb.State() == runner.StateLeader)
	}, 5*time.Second, time.Millisecond)
	leader, other, stopLeader, leaderDone := sa, sb, stopA, doneA
	if sb.State() == runner.StateLeader {
		leader, other, stopLeader, leaderDone = sb, sa, stopB, doneB
	}
	stopLeader()
	<-leaderDone
	require.Equal(t, runner.StateStopped, leader.State())
	require.Eventually(t, func() bool { return other.State() == runner.StateLeader }, 5*time.Second, time.Millisecond)
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == headOf(tb.mem) })
	require.Empty(t, tb.sink.duplicates())
	require.Equal(t, 90, tb.sink.count())
	stopA()
	stopB()
	<-doneA
	<-doneB
}

func TestTransientErrorsDoNotConsumePoisonBudget(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	tb.p.Policy.MaxAttempts = 2
	tb.mem.AppendCommitted("s", "A", "{}", "{}", "{}")
	failures := 0
	tb.sink.failOn = func(e *store.Event) error {
		if e.Position == 2 && failures < 10 {
			failures++
			return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, tb.mem.Node("a"))
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 3 })
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, 10, failures, "ten serialization failures, retried although max_attempts is 2")
	require.Equal(t, 3, tb.sink.count())
}
