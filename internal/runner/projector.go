package runner

import (
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/store"
)

// Then is what happens to an event that still fails after MaxAttempts.
type Then string

// Error policy outcomes.
const (
	ThenHalt       Then = "halt"
	ThenSkip       Then = "skip"
	ThenDeadLetter Then = "dead_letter"
)

// ErrorPolicy governs retries of an event a sink rejects. It is also what
// on_error decodes into (config.ErrorPolicy is this type).
type ErrorPolicy struct {
	// MaxAttempts is how often one event is tried before Then. Default 5; 1 to 100.
	MaxAttempts int `mapstructure:"max_attempts" limit:"1,100"`
	// Initial and Max bound the exponential backoff between attempts.
	// Defaults 100ms, 30s; each 1ms to 1h, Initial at most Max.
	Initial time.Duration `mapstructure:"initial" limit:"1ms,1h"`
	Max     time.Duration `mapstructure:"max" limit:"1ms,1h"`
	// Then is halt (default), skip or dead_letter.
	Then Then `mapstructure:"then"`
}

// Projector is one read model's definition, as the runner needs it.
type Projector struct {
	Name      string
	Filter    store.Filter
	BatchSize int
	Policy    ErrorPolicy
	// FlushInterval bounds how long the loop may keep an advance over
	// filtered-out events in memory before persisting it. Default 1s.
	FlushInterval time.Duration
	// CommitTimeout bounds finishing a batch already read when the run is
	// asked to stop. Default 30s.
	CommitTimeout time.Duration
	Logger        *zap.Logger
	Observer      Observer
	// Budget, shared by a replica's projectors, bounds the events held in
	// memory at once (see Budget); nil is unlimited.
	Budget *Budget
	// Control, if set, carries operator nudges (pause, resume, a
	// dead-letter retry request): the leader looks at what was asked at
	// its next batch boundary. The supervisor sets it.
	Control <-chan struct{}
	// PauseRecheck is how often a paused leader reads whether it was
	// resumed, in case it missed the resume's NOTIFY. Default 5s (the
	// daemon passes metrics.refresh_interval).
	PauseRecheck time.Duration
	// Clock tells the time the loop paces its last_error notes by
	// (statusMinGap, statusEvery); nil is time.Now. Tests inject one.
	Clock func() time.Time
}

// A projector's defaults, in one place: config.Default takes its
// projector defaults from these, and a Projector built without them (in a
// test, say) gets them from defaults.
const (
	DefaultBatchSize     = 500
	DefaultMaxAttempts   = 5
	DefaultInitial       = 100 * time.Millisecond
	DefaultMax           = 30 * time.Second
	DefaultThen          = ThenHalt
	DefaultFlushInterval = time.Second
	DefaultCommitTimeout = 30 * time.Second
	DefaultPauseRecheck  = 5 * time.Second
)

func (p *Projector) defaults() {
	if p.BatchSize <= 0 {
		p.BatchSize = DefaultBatchSize
	}
	if p.Policy.MaxAttempts <= 0 {
		p.Policy.MaxAttempts = DefaultMaxAttempts
	}
	if p.Policy.Initial <= 0 {
		p.Policy.Initial = DefaultInitial
	}
	if p.Policy.Max < p.Policy.Initial {
		p.Policy.Max = max(DefaultMax, p.Policy.Initial)
	}
	if p.Policy.Then == "" {
		p.Policy.Then = DefaultThen
	}
	if p.FlushInterval <= 0 {
		p.FlushInterval = DefaultFlushInterval
	}
	if p.CommitTimeout <= 0 {
		p.CommitTimeout = DefaultCommitTimeout
	}
	if p.Logger == nil {
		p.Logger = zap.NewNop()
	}
	if p.PauseRecheck <= 0 {
		p.PauseRecheck = DefaultPauseRecheck
	}
	if p.Clock == nil {
		p.Clock = time.Now
	}
	if p.Observer == nil {
		p.Observer = NopObserver{}
	}
}
