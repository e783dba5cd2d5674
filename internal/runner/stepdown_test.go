package runner_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// sinkBeforeFence runs the sink before the fence, as Target.Commit does
// (the sink's statements come first in the pipeline, advance() last): an
// event that fails fails even for a deposed leader. On the event's first retry a
// second replica claims the projector, as a successor would while the
// batch is in flight.
type sinkBeforeFence struct {
	*memtest.Node
	bad   int64
	other *memtest.Node
	mu    sync.Mutex
	fails int
}

func (s *sinkBeforeFence) Commit(ctx context.Context, req store.CommitRequest) error {
	for i := range req.Events {
		if req.Events[i].Position == s.bad {
			s.mu.Lock()
			s.fails++
			if s.fails == 2 { // the event's first retry alone: the events before it are committed
				_, _ = s.other.Claim(ctx, req.Projector)
			}
			s.mu.Unlock()
			return &store.ApplyError{Index: i, Err: &pgconn.PgError{Severity: "ERROR", Code: "23505", Message: "duplicate key value violates unique constraint"}}
		}
	}
	return s.Node.Commit(ctx, req)
}

// TestDeposedLeaderStepsDownInsteadOfHalting: a leader deposed while it retries a
// failing event (its successor claimed the checkpoint) must step down, not
// halt: its halt status is fenced and never recorded, yet Run reports
// ErrHalted, so this replica's supervisor stays halted until restart and
// never competes for the projector again.
func TestDeposedLeaderStepsDownInsteadOfHalting(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	for i := 0; i < 10; i++ {
		tb.mem.AppendCommitted("s", "A", "{}")
	}
	b := &sinkBeforeFence{Node: tb.mem.Node("a"), bad: 5, other: tb.mem.Node("b")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := <-start(ctx, tb.p, b)
	cp, _ := tb.mem.Checkpoint("p")
	require.NotEqual(t, store.StatusHalted, cp.Status, "the successor's checkpoint is not halted")
	require.False(t, errors.Is(err, runner.ErrHalted), "a deposed leader reported a halt it could not record: %v", err)
	require.ErrorIs(t, err, runner.ErrDeposed)
}

// TestSkipStaysRecordedAfterARetryNote: after a poison event is skipped, a transient
// failure of the next batch writes a retry note and its success clears
// last_error: the only record of the skip in the checkpoint row is gone.
func TestSkipStaysRecordedAfterARetryNote(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	tb.p.Policy.Then = runner.ThenSkip
	for i := 0; i < 20; i++ {
		tb.mem.AppendCommitted("s", "A", "{}")
	}
	tb.sink.failOn = poisonAt(7)
	failed := false
	tb.sink.failBatch = func(events []store.Event) error {
		if !failed && batchHolds(events, 8) && !batchHolds(events, 7) {
			failed = true
			return &pgconn.PgError{Severity: "ERROR", Code: "40001", Message: "could not serialize access"}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, tb.mem.Node("a"))
	head := headOf(tb.mem)
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == head })
	cancel()
	require.NoError(t, <-done)
	cp, _ := tb.mem.Checkpoint("p")
	require.True(t, failed)
	require.True(t, strings.HasPrefix(cp.LastError, "skipped "), "last_error lost the skip: %q", cp.LastError)
}
