package runner

import (
	"time"

	"github.com/projectord/projectord/internal/store"
)

// State is a supervisor's state, as reported to observers and /status.
type State string

// Supervisor states.
const (
	StateStandby State = "standby"
	StateLeader  State = "leader"
	StateHalted  State = "halted"
	// StatePaused is a leader an operator paused: it holds the lock, so
	// no other replica starts the projector, and applies nothing.
	StatePaused   State = "paused"
	StateStopped  State = "stopped"
	StateStarting State = "starting"
	// StateSuperseded: a newer version of the projector is live; this
	// replica, configured with an older one, never runs it again.
	StateSuperseded State = "superseded"
)

// States lists every state, for initialising metric label sets.
var States = []State{StateStarting, StateStandby, StateLeader, StateHalted, StateStopped, StatePaused, StateSuperseded}

// Observer receives what projectors do. Calls come from supervisor
// goroutines and must not block.
type Observer interface {
	StateChanged(projector string, s State)
	BatchCommitted(projector string, events int, to store.Cursor, took time.Duration)
	Error(projector, reason string, err error)
	// Poisoned reports a poison event's outcome once it is recorded in the
	// database, so each poison event is reported once, by the replica that
	// decided it.
	Poisoned(projector string, outcome Outcome)
}

// Outcome is what the error policy did with a poison event.
type Outcome string

// Poison event outcomes (on_error.then).
const (
	OutcomeSkipped      Outcome = "skipped"
	OutcomeDeadLettered Outcome = "dead_lettered"
	OutcomeHalted       Outcome = "halted"
)

// Outcomes lists every outcome, for initialising metric label sets.
var Outcomes = []Outcome{OutcomeSkipped, OutcomeDeadLettered, OutcomeHalted}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) StateChanged(string, State)                              {}
func (NopObserver) BatchCommitted(string, int, store.Cursor, time.Duration) {}
func (NopObserver) Error(string, string, error)                             {}
func (NopObserver) Poisoned(string, Outcome)                                {}
