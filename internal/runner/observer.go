package runner

import (
	"time"

	"github.com/projectord/projectord/internal/store"
)

// State is a supervisor's state, as reported to observers and /status.
type State string

// Supervisor states.
const (
	StateStandby  State = "standby"
	StateLeader   State = "leader"
	StateHalted   State = "halted"
	StateStopped  State = "stopped"
	StateStarting State = "starting"
)

// States lists every state, for initialising metric label sets.
var States = []State{StateStarting, StateStandby, StateLeader, StateHalted, StateStopped}

// Observer receives what projectors do. Calls come from supervisor
// goroutines and must not block.
type Observer interface {
	StateChanged(projector string, s State)
	BatchCommitted(projector string, events int, to store.Cursor, took time.Duration)
	Error(projector, reason string, err error)
}

// NopObserver ignores everything.
type NopObserver struct{}

func (NopObserver) StateChanged(string, State)                              {}
func (NopObserver) BatchCommitted(string, int, store.Cursor, time.Duration) {}
func (NopObserver) Error(string, string, error)                             {}
