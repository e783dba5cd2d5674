package runner

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/store"
)

// Supervisor keeps trying to lead one projector: standby, leader, standby
// again when leadership ends, until stopped or halted.
type Supervisor struct {
	p     Projector
	b     Backend
	inner Observer

	// wake ends a halted supervisor's wait (Wake).
	wake chan struct{}
	// control carries operator nudges to the leader (Nudge).
	control chan struct{}

	mu        sync.Mutex
	state     State
	cancelRun context.CancelFunc // stops the current run, if any
}

// Restart ends the current leadership gracefully, if this replica leads;
// the supervisor then competes again and the next leader claims afresh
// (after a reset, from the new checkpoint). A halted supervisor competes
// again too: a reset ends the halt.
func (s *Supervisor) Restart() {
	s.mu.Lock()
	if s.cancelRun != nil {
		s.cancelRun()
	}
	s.mu.Unlock()
	s.Wake()
}

// Wake makes a halted supervisor compete for its projector again: the
// halt may have ended (projectord resume, reset). If it has not, the claim
// is refused and the supervisor is halted again; anything else ignores it.
func (s *Supervisor) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Nudge tells the leader, if this replica leads, that an operator asked
// something of the projector (a pause, a resume, a dead-letter retry): it
// reads what at its next batch boundary. Anything else ignores it.
func (s *Supervisor) Nudge() {
	select {
	case s.control <- struct{}{}:
	default:
	}
}

// NewSupervisor returns a supervisor of p on b.
func NewSupervisor(p Projector, b Backend) *Supervisor {
	p.defaults()
	s := &Supervisor{p: p, b: b, state: StateStarting, wake: make(chan struct{}, 1), control: make(chan struct{}, 1)}
	p.Control = s.control
	s.inner = p.Observer
	s.p = p
	s.p.Observer = tracker{s}
	return s
}

// tracker routes the run's state reports through the supervisor, so the
// supervisor's own state and the observer's never disagree.
type tracker struct{ s *Supervisor }

func (t tracker) StateChanged(_ string, st State) { t.s.set(st) }
func (t tracker) BatchCommitted(p string, n int, to store.Cursor, d time.Duration) {
	t.s.inner.BatchCommitted(p, n, to, d)
}
func (t tracker) Error(p, reason string, err error) { t.s.inner.Error(p, reason, err) }
func (t tracker) Poisoned(p string, o Outcome)      { t.s.inner.Poisoned(p, o) }

// State returns the supervisor's current state.
func (s *Supervisor) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *Supervisor) set(st State) {
	s.mu.Lock()
	changed := s.state != st
	s.state = st
	s.mu.Unlock()
	if changed {
		s.inner.StateChanged(s.p.Name, st)
	}
}

// Run supervises until ctx ends, and returns nil then; or until a run meets
// a fatal error (IsFatal), and returns it. A graceful stop lets the leader
// finish its batch and release its lease before Run returns.
func (s *Supervisor) Run(ctx context.Context) error {
	log := s.p.Logger.With(zap.String("projector", s.p.Name))
	defer s.set(StateStopped)
	// After a failure, wait with backoff before trying again, so a
	// projector that cannot start (database down, target table missing)
	// does not spin; our own release NOTIFY would otherwise wake us at once.
	bo := newBackoff(500*time.Millisecond, 30*time.Second)
	for {
		s.set(StateStandby)
		// Take the turn channel before trying, so a release that happens
		// during the attempt still wakes us.
		turn := s.b.Turn()
		runCtx, cancel := context.WithCancel(ctx)
		s.mu.Lock()
		s.cancelRun = cancel
		s.mu.Unlock()
		err := Run(runCtx, s.p, s.b)
		s.mu.Lock()
		s.cancelRun = nil
		s.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case IsFatal(err):
			log.Error("projector cannot run without an operator", zap.Error(err))
			return err
		case errors.Is(err, ErrSuperseded):
			// Recorded in the database: a newer version is live. Nothing
			// ends that but a change of configuration, that is a restart.
			log.Warn("projector version is superseded; this replica no longer runs it", zap.Error(err))
			s.set(StateSuperseded)
			<-ctx.Done()
			return nil
		case errors.Is(err, ErrHalted):
			// The halt is recorded in the database: no replica runs the
			// projector until it ends. Wait to be told it may have.
			if s.State() != StateHalted {
				log.Warn("projector is halted; no replica runs it until `projectord resume` (or a changed handler)", zap.Error(err))
			}
			s.set(StateHalted)
			select {
			case <-s.wake:
			case <-ctx.Done():
				return nil
			}
			log.Info("projector may have been resumed; competing for it again")
			bo.reset()
			continue
		case err == nil, errors.Is(err, ErrNotLeader), errors.Is(err, coord.ErrUnavailable):
			bo.reset()
		case errors.Is(err, ErrLeaseLost), errors.Is(err, ErrDeposed):
			// Another replica most likely leads now; our turn comes anyway.
			bo.reset()
		default:
			s.inner.Error(s.p.Name, "run", err)
			delay := bo.delay()
			log.Warn("projector stopped with an error; retrying", zap.Duration("retry_in", delay), zap.Error(err))
			if !sleep(ctx, delay) {
				return nil
			}
			continue
		}
		select {
		case <-turn:
		case <-ctx.Done():
			return nil
		}
	}
}
