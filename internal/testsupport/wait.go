// Package testsupport holds what tests of several packages share. It is
// imported by tests only.
package testsupport

import (
	"testing"
	"time"

	"github.com/projectord/projectord/internal/freeport"
)

// pollEvery is how often WaitFor and Until test their condition.
const pollEvery = 2 * time.Millisecond

// WaitFor polls cond until it holds, failing tb when d passes first (or
// the test's context ends).
func WaitFor(tb testing.TB, d time.Duration, cond func() bool) {
	tb.Helper()
	Until(tb, "condition", d, cond)
}

// Until is WaitFor naming what it waits for in the failure.
func Until(tb testing.TB, what string, d time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("%s not met within %s", what, d)
		case <-tb.Context().Done():
			tb.Fatalf("%s: %v", what, tb.Context().Err())
		case <-tick.C:
		}
	}
}

// Port is a port on 127.0.0.1 for a process the test starts (see package
// freeport for why not port 0).
func Port(tb testing.TB) int {
	tb.Helper()
	p, err := freeport.Pick()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
