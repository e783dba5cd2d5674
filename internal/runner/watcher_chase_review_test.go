package runner_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// The source NOTIFY carries no payload (store.PrepareSQL), so the watcher
// cannot tell what a NOTIFY announced; "the head moved" is not "the
// announced events are published". Two older transactions, H1 (xid 10)
// and H2 (xid 12, say the coordination heartbeat), overlap two writers:
// W1 (xid 11) and W2 (xid 13) commit and notify while H1 still holds the
// horizon, so the NOTIFY's poll reads neither. H1 ends: the chase reads W1
// (the head moves), while H2 still holds W2 back. H2 ends, and nothing
// notifies. W2's events are as announced as W1's, yet Run dropped the
// chase when the head moved, leaving them for the next interval (a minute
// here), which the chase exists to avoid.
func TestWatcherChaseOutlivesAPartialHeadMove(t *testing.T) {
	t.Parallel()
	heads := &countingHeads{}
	h0 := store.Cursor{XID: 9, Position: 1}
	w1 := store.Cursor{XID: 11, Position: 2} // readable once H1 ends
	w2 := store.Cursor{XID: 13, Position: 3} // readable once H2 ends
	heads.head.Store(&h0)
	w := runner.NewWatcher(heads, time.Minute, zap.NewNop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	testsupport.Until(t, "the first head published", 10*time.Second, func() bool { h, _ := w.Head(); return h == h0 })

	n := heads.polls.Load()
	w.Kick() // W1's and W2's NOTIFYs; their poll sees neither (H1)
	// Two polls: the kick's, and one chase poll at least, both after the
	// kick, so both saw h0: the chase is under way while H1 holds.
	testsupport.Until(t, "the NOTIFY's poll and a chase poll", 10*time.Second, func() bool { return heads.polls.Load() >= n+2 })
	heads.head.Store(&w1) // H1 ends
	testsupport.Until(t, "W1's events published by the chase", 10*time.Second, func() bool { h, _ := w.Head(); return h == w1 })
	heads.head.Store(&w2) // H2 ends, and nothing notifies
	testsupport.Until(t, "W2's events, announced by a NOTIFY, published well before the minute's poll", 10*time.Second,
		func() bool { h, _ := w.Head(); return h == w2 })
}
