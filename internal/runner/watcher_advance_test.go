package runner_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// settableHeads is a HeadReader whose head the test moves.
type settableHeads struct{ head atomic.Pointer[store.Cursor] }

func (h *settableHeads) Head(context.Context) (store.Cursor, bool, error) {
	return *h.head.Load(), true, nil
}

// A shared read that takes long (up to the query timeout, on a loaded
// database) must not hold the watcher: it would publish no head meanwhile
// to anyone, also to projectors reading on their own; its loop would run
// two statements back to back, up to twice the query timeout, past the
// liveness budget (query timeout + 10 s) while the database merely is
// slow; and its Run would not end with its context.
func TestWatcherAdvanceDoesNotHoldPublication(t *testing.T) {
	heads := &settableHeads{}
	h0, h1 := store.Cursor{XID: 10, Position: 1}, store.Cursor{XID: 11, Position: 2}
	heads.head.Store(&h0)
	w := runner.NewWatcher(heads, 5*time.Millisecond, zap.NewNop())
	src := &blockingSource{started: make(chan struct{}), release: make(chan struct{})}
	// The Tail outlives the watcher here, as nothing ties their contexts.
	tailCtx, cancelTail := context.WithCancel(context.Background())
	t.Cleanup(func() { close(src.release); cancelTail() })
	tail := runner.NewTail(runner.TailConfig{Source: src, Heads: w.Head, Context: tailCtx, Limit: 10, Capacity: 40})
	w.BeforePublish(tail.Advance)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan struct{})
	go func() { defer close(ran); w.Run(ctx) }()
	published := func(c store.Cursor) func() bool {
		return func() bool { h, _ := w.Head(); return h == c }
	}
	testsupport.Until(t, "the first head published", 10*time.Second, published(h0))
	_, err := tail.Read(t.Context(), h0, store.Filter{}, 10, nil) // starts the window and uses it
	require.NoError(t, err)

	heads.head.Store(&h1)
	testsupport.Until(t, "the shared read started", 10*time.Second, func() bool {
		select {
		case <-src.started:
			return true
		default:
			return false
		}
	})
	testsupport.Until(t, "the new head published while the shared read hangs", 10*time.Second, published(h1))
	cancel()
	testsupport.Until(t, "Run ended with its context while the shared read hangs", 10*time.Second, func() bool {
		select {
		case <-ran:
			return true
		default:
			return false
		}
	})
}
