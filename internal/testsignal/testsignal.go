// Package testsignal lets tests wait for what production code does instead
// of polling its state (after riverqueue/river's testsignal). A Log is a
// field of the production type, nil until a test initialises it: Signal on
// an uninitialised Log is a nil check and nothing more.
package testsignal

import (
	"sync"
	"testing"
	"time"
)

// Log records every value signalled since Init, in order.
type Log[T any] struct {
	l *log[T]
}

type log[T any] struct {
	mu      sync.Mutex
	values  []T
	changed chan struct{}
}

// Init makes the log record; call it before the code under test runs.
func (l *Log[T]) Init() { l.l = &log[T]{changed: make(chan struct{})} }

// Signal records v; without Init it does nothing.
func (l *Log[T]) Signal(v T) {
	if l.l == nil {
		return
	}
	l.l.mu.Lock()
	l.l.values = append(l.l.values, v)
	close(l.l.changed)
	l.l.changed = make(chan struct{})
	l.l.mu.Unlock()
}

// WaitFor returns the first value signalled since Init for which match
// holds, waiting for it up to d; the test fails when none comes.
func (l *Log[T]) WaitFor(tb testing.TB, d time.Duration, what string, match func(T) bool) T {
	tb.Helper()
	if l.l == nil {
		tb.Fatalf("testsignal: waiting for %s on a log that was never initialised", what)
	}
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	seen := 0
	for {
		l.l.mu.Lock()
		vs, changed := l.l.values[seen:], l.l.changed
		seen = len(l.l.values)
		l.l.mu.Unlock()
		for _, v := range vs {
			if match(v) {
				return v
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("testsignal: no %s within %s", what, d)
		case <-tb.Context().Done():
			tb.Fatalf("testsignal: %s: %v", what, tb.Context().Err())
		}
	}
}
