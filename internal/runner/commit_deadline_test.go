package runner_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// commitBounds records how each commit reached the backend was bounded:
// by its context's deadline or by the request's.
type commitBounds struct {
	runner.Backend

	mu                 sync.Mutex
	ctxLeft, reqLeft   []time.Duration
	ctxBound, reqBound int
}

func (b *commitBounds) Commit(ctx context.Context, req store.CommitRequest) error {
	b.mu.Lock()
	if d, ok := ctx.Deadline(); ok {
		b.ctxBound++
		b.ctxLeft = append(b.ctxLeft, time.Until(d))
	}
	if !req.Deadline.IsZero() {
		b.reqBound++
		b.reqLeft = append(b.reqLeft, time.Until(req.Deadline))
	}
	b.mu.Unlock()
	return b.Backend.Commit(ctx, req)
}

func (b *commitBounds) seen() (ctxBound, reqBound int, left []time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ctxBound, b.reqBound, append(append([]time.Duration(nil), b.ctxLeft...), b.reqLeft...)
}

// deadlineBounds is a backend that honours the request's deadline.
type deadlineBounds struct{ *commitBounds }

func (deadlineBounds) CommitsByDeadline(string) bool { return true }

// Every commit is bounded by CommitTimeout: through a context deadline for
// a backend that knows no better, and through the request's deadline
// alone (no timer) for one that says it honours it.
func TestCommitIsBoundedByTheRequestDeadlineWhereTheBackendHonoursIt(t *testing.T) {
	t.Parallel()
	for _, honours := range []bool{false, true} {
		tb := setupMem(t)
		tb.p.CommitTimeout = 7 * time.Second
		for range 5 {
			tb.mem.AppendCommitted("s", "A", "{}")
		}
		cb := &commitBounds{Backend: tb.mem.Node("a")}
		var b runner.Backend = cb
		if honours {
			b = deadlineBounds{cb}
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := start(ctx, tb.p, b)
		waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 5 })
		cancel()
		require.NoError(t, <-done)

		ctxBound, reqBound, left := cb.seen()
		if honours {
			require.Zero(t, ctxBound, "a backend honouring the request's deadline gets no context deadline")
			require.Positive(t, reqBound)
		} else {
			require.Zero(t, reqBound, "a backend that does not say it honours the request's deadline is not given one")
			require.Positive(t, ctxBound)
		}
		for _, l := range left {
			require.True(t, l > 0 && l <= 7*time.Second, "honours %v: %s left of a 7 s commit timeout", honours, l)
		}
	}
}
