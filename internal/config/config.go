// Package config loads, defaults and validates projectord's configuration.
//
// Sources, highest precedence first: values a command sets itself
// (LoadOptions.Overrides), command-line flags, PROJECTORD_* environment
// variables (nested keys joined by "_", e.g. PROJECTORD_DATABASE_URL), the
// YAML file, and the defaults in defaults.go; viper layers them. Projectors
// are read from the file only. Load returns either a Config that passed
// Validate, with per-projector defaults filled in, or every problem at
// once, each with the path of its field (see ValidationError).
//
// Field names and key names are fixed by the mapstructure tags below, the
// one key model (keys.go): the environment variables, flags (DefineFlag),
// defaults, the check of a file's keys and `config print` output are all
// derived from them by reflection, so a new field needs a tag, a default in
// Default and a check in Validate, and nothing else. A numeric field also
// needs a `limit:"lo,hi"` tag, its inclusive range, which Validate and the
// decoder's messages read (a test fails for a numeric field without one).
// Duration ranges start at 1ms or more, so that no loop can spin a core, and
// end far below what would overflow a deadline (time.Now().Add) or exceed
// PostgreSQL's millisecond settings (INT_MAX ms, about 24.8 days).
package config

import (
	"time"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// Config is the whole, typed configuration of one projectord process.
type Config struct {
	Database     Database     `mapstructure:"database"`
	Source       Source       `mapstructure:"source"`
	Coordination Coordination `mapstructure:"coordination"`
	HTTP         HTTP         `mapstructure:"http"`
	Metrics      Metrics      `mapstructure:"metrics"`
	Log          Log          `mapstructure:"log"`
	// ShutdownTimeout bounds a graceful stop: finish the batch in flight,
	// commit, release locks. Default 25s, under Kubernetes' 30s grace
	// period; 1s to 1h.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout" limit:"1s,1h"`
	// Defaults apply to every projector that does not set the field itself.
	Defaults ProjectorDefaults `mapstructure:"defaults"`
	// Projectors are the read models this process keeps current.
	Projectors []Projector `mapstructure:"projectors"`

	// warnings are things Load found doubtful but not wrong; see Warnings.
	warnings []string
}

// Warnings returns what Load found doubtful but not wrong (a url_file
// that others can read), for the caller to log. A Config that was not
// loaded has none.
func (c *Config) Warnings() []string {
	return append([]string(nil), c.warnings...)
}

// Database is the source and coordination database.
type Database struct {
	// URL is a libpq-style URL or keyword/value DSN. Required unless URLFile is set.
	URL string `mapstructure:"url"`
	// URLFile names a file whose content, trimmed of surrounding whitespace,
	// becomes URL during Load, so the secret never sits in the YAML or the
	// environment (systemd credentials, Kubernetes secrets). Setting both URL
	// and URLFile is an error; a relative path is relative to the working
	// directory. It must be a regular file of at most 64 KiB (a FIFO would
	// block the loader); Load warns (see Config.Warnings) when others may
	// read it, or its group while it belongs to this process's user.
	URLFile string `mapstructure:"url_file"`
	// MaxConns is the pool size for reads and sink writes. Default 8; 1 to 1000.
	MaxConns int32 `mapstructure:"max_conns" limit:"1,1000"`
	// ConnectTimeout bounds establishing one connection. Default 5s; 100ms
	// to 10m: below that no connection over a real network succeeds, and
	// every attempt fails and is retried.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout" limit:"100ms,10m"`
	// QueryTimeout bounds every statement projectord issues. Default 30s;
	// 100ms to 24h: below, every statement times out and is retried; above,
	// a deadline overflows (2562047h did).
	QueryTimeout time.Duration `mapstructure:"query_timeout" limit:"100ms,24h"`
	// GroupCommit lets the batches that several projectors have ready at
	// once for one target database commit in one transaction, each still
	// fenced and failing alone (docs/architecture.md, "Group commit").
	// Default true: at the live tail it saves a commit per projector per
	// poll; false gives every batch its own transaction.
	GroupCommit bool `mapstructure:"group_commit"`
}

// Source describes the events table.
type Source struct {
	// Preset selects a column mapping from Presets: "native" (default, the
	// layout `projectord source prepare` creates). Every source.columns key
	// that is set explicitly overrides the preset's column.
	Preset string `mapstructure:"preset"`
	// Table is the schema-qualified events table. Default "public.events".
	Table string `mapstructure:"table"`
	// Columns maps projectord's event fields to the table's column names.
	// Keys left unset take the preset's column.
	Columns Columns `mapstructure:"columns"`
	// Ordering is "xid8" (default, gap-safe) or "position" (unsafe: may
	// skip events committed out of order; only for tables that cannot be
	// prepared, and reported loudly in logs and metrics).
	Ordering string `mapstructure:"ordering"`
	// PollInterval is how often the source watcher reads the head. Default
	// 50ms; 5ms to 1m: at most 200 head queries a second per replica.
	PollInterval time.Duration `mapstructure:"poll_interval" limit:"5ms,1m"`
	// Listen enables LISTEN on NotifyChannel as a wake-up hint (needs
	// `projectord source prepare --notify`). Default false.
	Listen bool `mapstructure:"listen"`
	// NotifyChannel is the channel the opt-in trigger notifies. Default "projectord_events".
	NotifyChannel string `mapstructure:"notify_channel"`
	// AllowUnindexed lets run start on a table without the cursor index
	// (source prepare builds it), for tables small enough that sorting all
	// of them per batch is cheap: it logs a warning and sets
	// projectord_source_unindexed. Default false: run refuses (exit 2).
	AllowUnindexed bool `mapstructure:"allow_unindexed"`
	// SharedReads lets the projectors at the live tail share one read of
	// the source per head change, each served its own events from it in
	// memory (docs/architecture.md, "Shared reads"). Default true; false
	// gives every projector reads of its own, as before.
	SharedReads bool `mapstructure:"shared_reads"`
}

// Columns maps event fields to column names. Empty EventID means the table
// has none; TransactionID may be empty only with ordering "position".
type Columns = store.Columns

// Coordination configures leader election.
type Coordination struct {
	// NodeID names this replica in checkpoints and the node registry.
	// Default: hostname-pid-<4 random hex digits>; must be unique per running
	// replica. At most 46 printable ASCII characters: it is carried in
	// application_name ("projectord-coord " + NodeID), which PostgreSQL cuts
	// at 63 bytes and in which it replaces anything but printable ASCII.
	NodeID string `mapstructure:"node_id"`
	// URL is an optional separate DSN for the coordination session; it must
	// reach PostgreSQL directly, never through a transaction pooler.
	// Default: database.url.
	URL string `mapstructure:"url"`
	// LockNamespace is the first key of every advisory lock. Default
	// 1886547818 ("proj"); any int32, as pg_advisory_lock(int, int) takes.
	LockNamespace int32 `mapstructure:"lock_namespace" limit:"-2147483648,2147483647"`
	// AcquireInterval is how often standbys retry for leadership. Default
	// 1s; 10ms to 1h (each try is a round trip on the coordination session).
	AcquireInterval time.Duration `mapstructure:"acquire_interval" limit:"10ms,1h"`
	// HeartbeatInterval is how often the session verifies its locks.
	// Default 1s; 10ms to 1m (each is a pg_locks query and a row update).
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval" limit:"10ms,1m"`
	// LeaseTimeout is when a silent leader counts as stalled. Default 15s;
	// 1s to 1h, and more than twice HeartbeatInterval.
	LeaseTimeout time.Duration `mapstructure:"lease_timeout" limit:"1s,1h"`
	// NodeExpiry is how long a node's row in projectord.nodes outlives its
	// last heartbeat once its coordination session is gone (a row whose
	// session lives is never removed); live replicas delete older ones, at
	// most once a minute each. Default 1h; 1m to 336h (14 days), and more
	// than LeaseTimeout.
	NodeExpiry time.Duration `mapstructure:"node_expiry" limit:"1m,336h"`
	// Balance spreads leadership evenly over the live replicas: each leads
	// floor or ceil of the projectors' total weight over their number,
	// and hands projectors over at a batch boundary when replicas join or
	// leave. Default true; false keeps first come, first served (the first
	// replica up leads everything).
	Balance bool `mapstructure:"balance"`
	// TCPUserTimeout bounds unacknowledged data on the coordination socket,
	// client and server side. Default 10s; 1s (below, one retransmission
	// drops a healthy connection) to INT_MAX ms, PostgreSQL's maximum of
	// tcp_user_timeout (larger values are refused by the server, at every
	// reconnect).
	TCPUserTimeout time.Duration `mapstructure:"tcp_user_timeout" limit:"1s,2147483647ms"`
	// KeepaliveIdle/Interval/Count configure TCP keepalives on the session.
	// Defaults 5s, 2s, 3. Idle and interval are 1s (PostgreSQL's resolution)
	// to 32767s (Linux's maximum); count is 1 to 127 (Linux's maximum).
	KeepaliveIdle     time.Duration `mapstructure:"keepalive_idle" limit:"1s,32767s"`
	KeepaliveInterval time.Duration `mapstructure:"keepalive_interval" limit:"1s,32767s"`
	KeepaliveCount    int           `mapstructure:"keepalive_count" limit:"1,127"`
}

// HTTP configures the metrics and health server.
type HTTP struct {
	// Listen is the address of /metrics, /livez, /readyz, /status. Default ":7464";
	// "" disables the server.
	Listen string `mapstructure:"listen"`
}

// Metrics configures metric refreshing.
type Metrics struct {
	// RefreshInterval is how often positions, head and lag are recomputed.
	// Default 5s; 100ms to 1h (each refresh runs several queries).
	RefreshInterval time.Duration `mapstructure:"refresh_interval" limit:"100ms,1h"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `mapstructure:"level"`
	// Format is json (default) or console.
	Format string `mapstructure:"format"`
}

// ProjectorDefaults holds per-projector settings that apply unless a projector overrides them.
type ProjectorDefaults struct {
	// BatchSize defaults to 500: large enough to amortise the commit, small
	// enough that a batch's transaction does not hold the xmin horizon back.
	BatchSize int `mapstructure:"batch_size" limit:"1,10000"`
	// OnError defaults to 5 attempts with 100ms..30s backoff, then halt:
	// stopping is the only choice that loses nothing without being asked to.
	OnError ErrorPolicy `mapstructure:"on_error"`
}

// Projector is one read model.
type Projector struct {
	// Name is the projector's identity: [a-z0-9_.-], 1-63 characters, unique.
	Name string `mapstructure:"name"`
	// EventTypes limits the events read; empty means all.
	EventTypes []string `mapstructure:"event_types"`
	// StreamPrefix limits the events read to streams whose id starts with it.
	StreamPrefix string `mapstructure:"stream_prefix"`
	// BatchSize is the most events applied in one transaction. 0 in the
	// file means defaults.batch_size (500); Load fills it in, so code reading
	// a loaded Config sees the effective value.
	BatchSize int `mapstructure:"batch_size" limit:"1,10000"`
	// OnError overrides defaults.on_error field by field; Load fills every
	// field the projector leaves unset, so it is the effective policy.
	OnError ErrorPolicy `mapstructure:"on_error"`
	// Weight is what the projector costs relative to others, for balancing
	// (coordination.balance): replicas share the total weight. 0 in the
	// file means 1; Load fills it in. 1 to 1000.
	Weight int `mapstructure:"weight" limit:"1,1000"`
	// Sink is where the projector writes. Exactly one kind must be set.
	Sink Sink `mapstructure:"sink"`
	// Version numbers the projector's read model: a new number rebuilds it
	// beside the live version, under its own lock and checkpoint, and is
	// promoted once caught up (README, "Rebuild without downtime"). 0 in
	// the file means 1, as for every projector before versions existed.
	Version int `mapstructure:"version" limit:"1,1000000"`
}

// EffectiveVersion is Version, with 0 (unset) meaning 1.
func (p Projector) EffectiveVersion() int { return max(p.Version, 1) }

// ErrorPolicy says what happens when applying an event fails: on_error
// decodes straight into the runner's type, whose tags are the keys and
// their ranges, so the policy has one definition.
type ErrorPolicy = runner.ErrorPolicy

// Sink selects the projector's output: exactly one of SQL and HTTP.
type Sink struct {
	SQL  *SQLSink  `mapstructure:"sql"`
	HTTP *HTTPSink `mapstructure:"http"`
}

// HTTPSink posts each batch to the user's service as a CloudEvents batch,
// signed per Standard Webhooks. Its checkpoint lives in database.url.
type HTTPSink struct {
	// URL is where batches are POSTed: http or https. Required.
	URL string `mapstructure:"url"`
	// SecretFile holds the signing secret, whsec_<base64>; optional.
	SecretFile string `mapstructure:"secret_file"`
	// HeadersFile holds extra headers, one "Name: value" a line; optional.
	HeadersFile string `mapstructure:"headers_file"`
	// Timeout bounds one request. 0 means DefaultHTTPTimeout (10s).
	Timeout time.Duration `mapstructure:"timeout" limit:"10ms,10m"`
}

// DefaultHTTPTimeout bounds one request of an HTTP sink when
// sink.http.timeout is unset.
const DefaultHTTPTimeout = 10 * time.Second

// SQLSink runs one statement per event, by event type, with named parameters.
type SQLSink struct {
	// TargetURL is another database to write to; the projector's checkpoint
	// then lives there too. Default: database.url.
	TargetURL string `mapstructure:"target_url"`
	// Handlers maps an event type (or "*") to the SQL it runs.
	Handlers map[string]string `mapstructure:"handlers"`
	// Reset is SQL that empties the read model before a rebuild.
	Reset string `mapstructure:"reset"`
	// Setup runs once per version, by its first leader, before its first
	// batch (e.g. CREATE TABLE IF NOT EXISTS of the version's table).
	Setup string `mapstructure:"setup"`
	// Promote runs in the transaction that makes this version live, once it
	// is caught up (e.g. CREATE OR REPLACE VIEW over the version's table).
	Promote string `mapstructure:"promote"`
	// Retire runs once after promotion, recorded in its own transaction
	// (e.g. DROP TABLE of the previous version's table).
	Retire string `mapstructure:"retire"`
}

// TargetURL is the database holding the projector's checkpoint, "" for
// database.url: an HTTP sink's checkpoint is always there.
func (s Sink) TargetURL() string {
	if s.SQL == nil {
		return ""
	}
	return s.SQL.TargetURL
}

// ResetSQL is the SQL that empties the read model on a reset ("" for none:
// an HTTP receiver is told nothing, and gets every event again).
func (s Sink) ResetSQL() string {
	if s.SQL == nil {
		return ""
	}
	return s.SQL.Reset
}
