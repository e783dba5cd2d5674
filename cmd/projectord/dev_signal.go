package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// devSignals turns the first SIGINT or SIGTERM into a graceful stop (run
// ends) and the second into a hurried one (hurry ends: dev skips checking
// the read models and cuts the daemon's shutdown short, but still removes
// its cluster). Unlike `run`, a second signal does not exit at once: that
// would leave the cluster's directory behind.
type devSignals struct {
	run, hurry  context.Context
	cancelRun   context.CancelCauseFunc
	cancelHurry context.CancelCauseFunc
	sigs        chan os.Signal
	done        chan struct{}
	wg          sync.WaitGroup

	mu    sync.Mutex
	first os.Signal
}

func watchDevSignals(parent context.Context) *devSignals {
	s := &devSignals{sigs: make(chan os.Signal, 2), done: make(chan struct{})}
	s.run, s.cancelRun = context.WithCancelCause(parent)
	s.hurry, s.cancelHurry = context.WithCancelCause(context.WithoutCancel(parent))
	signal.Notify(s.sigs, syscall.SIGINT, syscall.SIGTERM)
	s.wg.Go(func() {
		for {
			select {
			case sig := <-s.sigs:
				s.mu.Lock()
				first := s.first == nil
				if first {
					s.first = sig
				}
				s.mu.Unlock()
				if first {
					s.cancelRun(fmt.Errorf("received %v", sig))
				} else {
					s.cancelHurry(fmt.Errorf("received a second %v", sig))
				}
			case <-s.done:
				return
			}
		}
	})
	return s
}

// received returns the first signal, or nil.
func (s *devSignals) received() os.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// release stops watching and restores the default signal handling.
func (s *devSignals) release() {
	signal.Stop(s.sigs)
	close(s.done)
	s.wg.Wait()
	s.cancelRun(nil)
	s.cancelHurry(nil)
}
