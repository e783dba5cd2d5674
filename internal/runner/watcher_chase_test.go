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

// Head counts a poll once it has read the head, so that a test that sees
// the count move knows the head it had stored before was the one read.
func (h *countingHeads) Head(ctx context.Context) (store.Cursor, bool, error) {
	c, ok, err := h.settableHeads.Head(ctx)
	h.polls.Add(1)
	return c, ok, err
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
}

// A NOTIFY whose events never become readable (within the interval) costs
// a bounded number of early polls, not a poll every 10 ms.
func TestWatcherChaseIsBounded(t *testing.T) {
	t.Parallel()
	heads := &countingHeads{}
	h0 := store.Cursor{XID: 10, Position: 1}
	heads.head.Store(&h0)
	// An interval past the window: every poll in it is the kick's or a
	// chase's, none the ticker's.
	interval := 10 * time.Second
	w := runner.NewWatcher(heads, interval, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	testsupport.Until(t, "the first head published", 10*time.Second, func() bool { h, _ := w.Head(); return h == h0 })
	start, n := time.Now(), heads.polls.Load()
	w.Kick()
	time.Sleep(2 * time.Second) // a measurement window, not a synchronisation
	got, took := heads.polls.Load()-n, time.Since(start)
	// The kick's poll and chases after 10, 20, 40, … 640 ms (1.27 s in
	// all; the next is due at 2.55 s): 8 polls, and a loaded machine can
	// only make fewer. Without the chase there is one.
	if got > 8 {
		t.Fatalf("%d polls in %v after one NOTIFY (interval %v), want at most 8", got, took, interval)
	}
	if got < 3 {
		t.Fatalf("only %d polls in %v after one NOTIFY: the chase did not run", got, took)
	}
}
