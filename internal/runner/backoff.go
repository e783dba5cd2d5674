package runner

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is exponential with full jitter in [d/2, d], capped at max.
type backoff struct {
	initial, max time.Duration
	next         time.Duration
}

func newBackoff(initial, max time.Duration) *backoff {
	if initial <= 0 {
		initial = 100 * time.Millisecond
	}
	if max < initial {
		max = initial
	}
	return &backoff{initial: initial, max: max, next: initial}
}

// delay returns the next wait and doubles the one after it.
func (b *backoff) delay() time.Duration {
	d := b.next
	b.next = min(b.next*2, b.max)
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.next = b.initial }

// sleep waits for d or ctx; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Backoff is the loops' jittered exponential backoff, for the daemon's own
// retries (bootstrapping against a database that is not there yet).
type Backoff struct{ b *backoff }

// NewBackoff starts at initial and doubles up to max.
func NewBackoff(initial, max time.Duration) *Backoff { return &Backoff{newBackoff(initial, max)} }

// Delay returns the next wait and doubles the one after it.
func (b *Backoff) Delay() time.Duration { return b.b.delay() }

// Sleep waits for d or ctx; it reports whether d elapsed.
func Sleep(ctx context.Context, d time.Duration) bool { return sleep(ctx, d) }
