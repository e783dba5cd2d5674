package config

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"time"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// DefaultPreset is the source preset used when source.preset is not set.
const DefaultPreset = "native"

// Presets maps a source.preset name to its column mapping: the columns of
// store.Presets, where each store's layout, row rules and prepare steps
// are defined. Every key of source.columns a preset does not name keeps
// working. Treat it as read-only: Load reads it concurrently.
var Presets = func() map[string]Columns {
	m := make(map[string]Columns, len(store.Presets))
	for name, p := range store.Presets {
		m[name] = p.Columns
	}
	return m
}()

// Default returns the configuration every key falls back to when no flag,
// environment variable or file sets it. It is the single place defaults are
// written down; Load derives its viper defaults from it, so a field added to
// Config gets its default here and nowhere else.
//
// The source columns are those of DefaultPreset; Load uses the columns of
// whichever preset is selected. Database URL, coordination URL and node id
// have no default here: empty URLs mean "use database.url", and an empty
// node id means DefaultNodeID, which depends on the running process.
func Default() Config {
	return Config{
		Database: Database{
			// Reads and sink writes of all projectors share the pool; the
			// coordination session is a separate, unpooled connection.
			MaxConns:       8,
			ConnectTimeout: 5 * time.Second,
			QueryTimeout:   30 * time.Second,
			// One commit for many projectors' small batches at the tail.
			GroupCommit: true,
		},
		Source: Source{
			Preset:  DefaultPreset,
			Table:   store.Presets[DefaultPreset].Table,
			Columns: Presets[DefaultPreset],
			// xid8 is the only ordering that never skips events.
			Ordering: "xid8",
			// One cheap head query per replica, whatever the projector count.
			PollInterval:  50 * time.Millisecond,
			Listen:        false,
			NotifyChannel: "projectord_events",
			// One read per head change serves every projector at the tail.
			SharedReads: true,
		},
		Coordination: Coordination{
			// "proj" in ASCII, so the locks are recognisable in pg_locks.
			LockNamespace:     1886547818,
			AcquireInterval:   time.Second,
			HeartbeatInterval: time.Second,
			// Several missed heartbeats before a leader counts as stalled.
			LeaseTimeout: 15 * time.Second,
			// Dead nodes stay visible (projectord status) for a while,
			// and do not pile up when node ids are pod names.
			NodeExpiry: time.Hour,
			// Capacity, not only availability, from every replica.
			Balance:           true,
			TCPUserTimeout:    10 * time.Second,
			KeepaliveIdle:     5 * time.Second,
			KeepaliveInterval: 2 * time.Second,
			KeepaliveCount:    3,
		},
		HTTP:    HTTP{Listen: ":7464"},
		Metrics: Metrics{RefreshInterval: 5 * time.Second},
		Log:     Log{Level: "info", Format: "json"},
		// Under Kubernetes' default 30s termination grace period.
		ShutdownTimeout: 25 * time.Second,
		Defaults: ProjectorDefaults{
			BatchSize: runner.DefaultBatchSize,
			OnError: ErrorPolicy{
				MaxAttempts: runner.DefaultMaxAttempts,
				Initial:     runner.DefaultInitial,
				Max:         runner.DefaultMax,
				Then:        runner.DefaultThen,
			},
		},
	}
}

// DefaultWeight is a projector's weight when it sets none: every projector
// costs the same unless told otherwise.
const DefaultWeight = 1

// DefaultLookPaths returns the files Load tries, in order, when neither
// LoadOptions.File nor PROJECTORD_CONFIG names one.
func DefaultLookPaths() []string {
	return []string{"./configs/projectord.yaml", "/etc/projectord/projectord.yaml"}
}

// DefaultNodeID is the node id to use when coordination.node_id is empty:
// "hostname-pid-xxxx": readable in pg_stat_activity, and unique even for containers that share a hostname.
func DefaultNodeID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	// A random suffix: containers that share a hostname all run as pid 1,
	// and two replicas with one node id could not tell each other apart
	// (neither could take over from the other).
	suffix := fmt.Sprintf("-%d-%04x", os.Getpid(), rand.N(0x10000))
	// The id must pass checkNodeID: a hostname may be 64 bytes long, and
	// keeping the suffix matters more than keeping all of the name.
	host = strings.Map(func(r rune) rune {
		if r <= 0x20 || r > 0x7e {
			return '_'
		}
		return r
	}, host)
	if len(host) > maxNodeIDLen-len(suffix) {
		host = host[:maxNodeIDLen-len(suffix)]
	}
	return host + suffix
}

// applyProjectorDefaults fills every projector field left at its zero value
// from c.Defaults, so that code reading a loaded Config sees effective values.
// Empty projector and event_types lists become nil, so that each has one
// form whether the file omits them or writes [].
func (c *Config) applyProjectorDefaults() {
	if len(c.Projectors) == 0 {
		c.Projectors = nil
	}
	for i := range c.Projectors {
		c.Projectors[i] = effectiveProjector(c.Projectors[i], c.Defaults)
		if len(c.Projectors[i].EventTypes) == 0 {
			c.Projectors[i].EventTypes = nil
		}
	}
}

// effectiveProjector returns p with zero-valued BatchSize and OnError fields
// taken from d. A zero value can never be a valid setting of these fields, so
// zero unambiguously means "not set".
func effectiveProjector(p Projector, d ProjectorDefaults) Projector {
	if p.BatchSize == 0 {
		p.BatchSize = d.BatchSize
	}
	if p.Weight == 0 {
		p.Weight = DefaultWeight
	}
	if p.Version == 0 {
		p.Version = 1 // every projector before versions existed
	}
	if p.OnError.MaxAttempts == 0 {
		p.OnError.MaxAttempts = d.OnError.MaxAttempts
	}
	if p.OnError.Initial == 0 {
		p.OnError.Initial = d.OnError.Initial
	}
	if p.OnError.Max == 0 {
		p.OnError.Max = d.OnError.Max
	}
	if p.OnError.Then == "" {
		p.OnError.Then = d.OnError.Then
	}
	return p
}
