package runner_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestRetryNotesArePacedByTheClock: with the loop's clock injected, the
// pacing of last_error is exact, not a bound on a wall clock: one note
// however many retries while the clock stands still, one refresh once
// statusEvery (5 s) has passed on it, none for a change of error within
// statusMinGap (1 s), and one clear when the batch gets through.
func TestRetryNotesArePacedByTheClock(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	clock := &fakeClock{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	tb.p.Clock = clock.Now
	obs := &reasonLog{}
	tb.p.Observer = obs
	tb.mem.AppendCommitted("s", "A", "{}", "{}", "{}")
	var outage atomic.Bool
	var table atomic.Value
	table.Store("rm")
	outage.Store(true)
	tb.sink.failOn = func(e *store.Event) error {
		if outage.Load() {
			return &pgconn.PgError{Severity: "ERROR", Code: "42P01", Message: `relation "` + table.Load().(string) + `" does not exist`}
		}
		return nil
	}
	b := &statusCounter{Node: tb.mem.Node("a")}
	ctx, cancel := context.WithCancel(context.Background())
	done := start(ctx, tb.p, b)
	retries := func(n int) {
		t.Helper()
		target := obs.count("database") + n
		require.Eventually(t, func() bool { return obs.count("database") >= target }, 30*time.Second, time.Millisecond)
	}
	retries(50)
	require.EqualValues(t, 1, b.n.Load(), "one note for 50 retries while the clock stands still")

	table.Store("rm2") // another error, within statusMinGap
	clock.Add(500 * time.Millisecond)
	retries(20)
	require.EqualValues(t, 1, b.n.Load(), "a changed error within statusMinGap is not written")

	clock.Add(4600 * time.Millisecond) // 5.1 s after the note: statusEvery has passed
	retries(20)
	require.EqualValues(t, 2, b.n.Load(), "one refresh once statusEvery has passed")

	outage.Store(false)
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor.Position == 3 && c.LastError == "" })
	cancel()
	require.NoError(t, <-done)
	require.EqualValues(t, 3, b.n.Load(), "and one clear")
}
