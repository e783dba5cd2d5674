package runner_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// countingHeads is a HeadReader whose head the test moves, counting polls.
type countingHeads struct {
	settableHeads
	polls atomic.Int64
}

func (h *countingHeads) Head(ctx context.Context) (store.Cursor, bool, error) {
	h.polls.Add(1)
	return h.settableHeads.Head(ctx)
}

// A NOTIFY's poll can run while an older transaction still holds the
// horizon below the events it announced: they become readable only when
// that transaction ends, and nothing notifies then. The watcher must chase
// them with early polls rather than leave them to its next interval (here
// a minute, as with `source.listen` and a long `poll_interval`). Seen in CI
// as TestPGNotifyWakesProjectorBeforeThePoll waiting out the full minute.
func TestWatcherChasesANotifyThePollCouldNotReadYet(t *testing.T) {
	t.Parallel()
	heads := &countingHeads{}
	h0, h1 := store.Cursor{XID: 10, Position: 1}, store.Cursor{XID: 11, Position: 2}
	heads.head.Store(&h0)
	w := runner.NewWatcher(heads, time.Minute, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	testsupport.Until(t, "the first head published", 10*time.Second, func() bool { h, _ := w.Head(); return h == h0 })

	// The NOTIFY arrives; its poll still sees the old head (the horizon).
	n := heads.polls.Load()
	w.Kick()
	testsupport.Until(t, "the NOTIFY's poll", 10*time.Second, func() bool { return heads.polls.Load() > n })
	// The holder ends: the events are readable now, with no NOTIFY.
	heads.head.Store(&h1)
	testsupport.Until(t, "the announced events published well before the minute's poll", 10*time.Second,
		func() bool { h, _ := w.Head(); return h == h1 })

	// Chasing ends once the head moved: no more polls than the interval's.
	n = heads.polls.Load()
	time.Sleep(300 * time.Millisecond) // a window in which no poll may happen, not a synchronisation
	if got := heads.polls.Load(); got != n {
		t.Fatalf("the watcher went on polling after the head moved: %d polls in 300 ms", got-n)
	}
}

// A NOTIFY whose events never become readable (within the interval) costs
// a bounded number of early polls, not a poll every 10 ms.
func TestWatcherChaseIsBounded(t *testing.T) {
	t.Parallel()
	heads := &countingHeads{}
	h0 := store.Cursor{XID: 10, Position: 1}
	heads.head.Store(&h0)
	interval := 640 * time.Millisecond
	w := runner.NewWatcher(heads, interval, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	testsupport.Until(t, "the first head published", 10*time.Second, func() bool { h, _ := w.Head(); return h == h0 })
	start, n := time.Now(), heads.polls.Load()
	w.Kick()
	time.Sleep(2 * time.Second) // a measurement window, not a synchronisation
	got, took := heads.polls.Load()-n, time.Since(start)
	// The kick's poll, chases after 10, 20, 40, 80, 160, 320 ms, and the
	// ticker's polls in the window; a loaded machine can only make fewer.
	limit := 1 + 6 + int64(took/interval) + 1
	if got > limit {
		t.Fatalf("%d polls in %v after one NOTIFY (interval %v), want at most %d", got, took, interval, limit)
	}
	if got < 4 {
		t.Fatalf("only %d polls in %v after one NOTIFY: the chase did not run", got, took)
	}
}
