package pgtest

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
)

// Main sets up the test server and template, runs the tests and removes
// everything again. It returns the exit code for os.Exit.
//
// Without server binaries and without PROJECTORD_TEST_DATABASE_URL it
// prints how to install them and fails: skipping would let a broken setup
// pass as green.
//
// On SIGINT or SIGTERM it cleans up and exits with 128+signal (130, 143),
// even while tests are running, because m.Run cannot be interrupted.
func Main(m *testing.M, opts ...Option) int {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	g := &guard{cancel: cancel}
	stopWatching := make(chan struct{})
	defer close(stopWatching)
	go g.watch(sigs, stopWatching)

	e, err := newEnv(ctx, cfg)
	if err != nil {
		if sig := g.signal(); sig != nil {
			fmt.Fprintf(os.Stderr, "pgtest: interrupted by %v during setup\n", sig)
			return exitCode(sig)
		}
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		return 1
	}
	if sig := g.running(e); sig != nil {
		fmt.Fprintf(os.Stderr, "pgtest: interrupted by %v during setup\n", sig)
		e.teardown()
		return exitCode(sig)
	}
	active.Store(e)
	code := m.Run()
	active.Store(nil)
	g.finished()
	e.teardown()
	return code
}

// guard decides who cleans up after a signal. During setup the signal
// cancels it and Main cleans up as after any failure. While tests run,
// Main is stuck in m.Run, so the watcher cleans up and exits the process.
type guard struct {
	cancel context.CancelCauseFunc

	mu  sync.Mutex
	env *env      // set while tests run
	sig os.Signal // the first signal received
}

func (g *guard) watch(sigs <-chan os.Signal, stop <-chan struct{}) {
	var sig os.Signal
	select {
	case sig = <-sigs:
	case <-stop:
		return
	}
	g.mu.Lock()
	// Held until exit: Main, leaving m.Run meanwhile, must not tear
	// down concurrently or return a different exit code.
	g.sig = sig
	g.cancel(fmt.Errorf("interrupted by %v", sig))
	if g.env == nil {
		g.mu.Unlock()
		return
	}
	fmt.Fprintf(os.Stderr, "pgtest: interrupted by %v; removing test databases\n", sig)
	g.env.teardown()
	os.Exit(exitCode(sig))
}

// running hands e to the watcher, or returns the signal that arrived first.
func (g *guard) running(e *env) os.Signal {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sig == nil {
		g.env = e
	}
	return g.sig
}

// finished takes the environment back from the watcher.
func (g *guard) finished() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.env = nil
}

func (g *guard) signal() os.Signal {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sig
}

// exitCode follows the shell convention for death by signal.
func exitCode(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}
