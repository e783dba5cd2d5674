package config

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// validConfig returns a configuration that passes Validate, built in code
// the way a test of another package would.
func validConfig() *Config {
	c := Default()
	c.Database.URL = testURL
	c.Projectors = []Projector{{
		Name: "orders",
		Sink: Sink{SQL: &SQLSink{Handlers: map[string]string{"OrderPlaced": "SELECT 1"}}},
	}}
	return &c
}

func TestValidateValidConfig(t *testing.T) {
	t.Parallel()

	c := validConfig()
	require.NoError(t, c.Validate())

	c.Projectors = nil
	require.NoError(t, c.Validate(), "zero projectors is not a config error")

	// Unset projector fields validate as their defaults, as Load would fill them.
	c = validConfig()
	require.Zero(t, c.Projectors[0].BatchSize)
	require.NoError(t, c.Validate())
}

func TestValidateProblems(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
		path   string
		msg    string
	}{
		{"url required", func(c *Config) { c.Database.URL = "" }, "database.url", "PROJECTORD_DATABASE_URL"},
		{"url unparseable", func(c *Config) { c.Database.URL = "postgres://h:notaport/db" }, "database.url", "not a valid PostgreSQL connection string"},
		{"max conns", func(c *Config) { c.Database.MaxConns = 1001 }, "database.max_conns", "between 1 and 1000"},
		{"connect timeout", func(c *Config) { c.Database.ConnectTimeout = 0 }, "database.connect_timeout", "between 100ms and 10m0s"},
		{"query timeout", func(c *Config) { c.Database.QueryTimeout = -time.Second }, "database.query_timeout", "between 100ms and 24h0m0s"},
		{"preset", func(c *Config) { c.Source.Preset = "axon" }, "source.preset", `"axon" is not a known preset (emmett, eventcore, eventuous, marten, messagedb, native)`},
		{"table", func(c *Config) { c.Source.Table = "public.events; DROP TABLE x" }, "source.table", "SQL identifier"},
		{"table three parts", func(c *Config) { c.Source.Table = "db.public.events" }, "source.table", "SQL identifier"},
		{"table too long", func(c *Config) { c.Source.Table = strings.Repeat("t", 64) }, "source.table", "at most 63"},
		{"column", func(c *Config) { c.Source.Columns.Data = "data->x" }, "source.columns.data", "SQL identifier"},
		{"column qualified", func(c *Config) { c.Source.Columns.Data = "e.data" }, "source.columns.data", "SQL identifier"},
		{"column missing", func(c *Config) { c.Source.Columns.StreamID = "" }, "source.columns.stream_id", "is required"},
		{"xid8 needs transaction id", func(c *Config) { c.Source.Columns.TransactionID = "" }, "source.columns.transaction_id", "is required"},
		{"ordering", func(c *Config) { c.Source.Ordering = "time" }, "source.ordering", "xid8, position"},
		{"poll too fast", func(c *Config) { c.Source.PollInterval = time.Microsecond }, "source.poll_interval", "between 5ms and 1m0s"},
		{"poll too slow", func(c *Config) { c.Source.PollInterval = 2 * time.Minute }, "source.poll_interval", "between 5ms and 1m0s"},
		{"notify channel", func(c *Config) { c.Source.NotifyChannel = "a b" }, "source.notify_channel", "SQL identifier"},
		{"listen needs channel", func(c *Config) { c.Source.Listen, c.Source.NotifyChannel = true, "" }, "source.notify_channel", "required"},
		{"coordination url", func(c *Config) { c.Coordination.URL = "host=h port=x" }, "coordination.url", "not a valid PostgreSQL connection string"},
		{"acquire interval", func(c *Config) { c.Coordination.AcquireInterval = 0 }, "coordination.acquire_interval", "between 10ms and 1h0m0s"},
		{"lease vs heartbeat", func(c *Config) { c.Coordination.LeaseTimeout = 2 * time.Second }, "coordination.lease_timeout", "more than twice"},
		{"node expiry too short", func(c *Config) { c.Coordination.NodeExpiry = 59 * time.Second }, "coordination.node_expiry", "between 1m0s and 336h0m0s"},
		{"node expiry too long", func(c *Config) { c.Coordination.NodeExpiry = 337 * time.Hour }, "coordination.node_expiry", "between 1m0s and 336h0m0s"},
		{"node expiry vs lease", func(c *Config) {
			c.Coordination.LeaseTimeout, c.Coordination.NodeExpiry = 10*time.Minute, 10*time.Minute
		}, "coordination.node_expiry", "must be more than coordination.lease_timeout (10m0s)"},
		{"tcp user timeout", func(c *Config) { c.Coordination.TCPUserTimeout = 0 }, "coordination.tcp_user_timeout", "between 1s and 596h31m23.647s"},
		{"keepalive idle", func(c *Config) { c.Coordination.KeepaliveIdle = 500 * time.Millisecond }, "coordination.keepalive_idle", "between 1s and 9h6m7s"},
		{"keepalive interval", func(c *Config) { c.Coordination.KeepaliveInterval = 0 }, "coordination.keepalive_interval", "between 1s and 9h6m7s"},
		{"keepalive count", func(c *Config) { c.Coordination.KeepaliveCount = 0 }, "coordination.keepalive_count", "between 1 and 127"},
		{"http listen", func(c *Config) { c.HTTP.Listen = "7464" }, "http.listen", "host:port"},
		{"http port", func(c *Config) { c.HTTP.Listen = ":70000" }, "http.listen", "host:port"},
		{"refresh", func(c *Config) { c.Metrics.RefreshInterval = 0 }, "metrics.refresh_interval", "between 100ms and 1h0m0s"},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, "log.level", "debug, info, warn, error"},
		{"log format", func(c *Config) { c.Log.Format = "text" }, "log.format", "json, console"},
		{"shutdown", func(c *Config) { c.ShutdownTimeout = 0 }, "shutdown_timeout", "between 1s and 1h0m0s"},
		{"default batch", func(c *Config) { c.Defaults.BatchSize = 0 }, "defaults.batch_size", "between 1 and 10000"},
		{"default attempts", func(c *Config) { c.Defaults.OnError.MaxAttempts = 101 }, "defaults.on_error.max_attempts", "between 1 and 100"},
		{"default then", func(c *Config) { c.Defaults.OnError.Then = "retry" }, "defaults.on_error.then", "halt, skip, dead_letter"},
		{"default backoff", func(c *Config) { c.Defaults.OnError.Initial = time.Minute }, "defaults.on_error.initial", "must not exceed defaults.on_error.max (30s)"},
		{"batch size", func(c *Config) { c.Projectors[0].BatchSize = 10001 }, "projectors[0].batch_size", "between 1 and 10000"},
		{"negative batch size", func(c *Config) { c.Projectors[0].BatchSize = -1 }, "projectors[0].batch_size", "between 1 and 10000"},
		{"then", func(c *Config) { c.Projectors[0].OnError.Then = "ignore" }, "projectors[0].on_error.then", "halt, skip, dead_letter"},
		{"attempts", func(c *Config) { c.Projectors[0].OnError.MaxAttempts = -1 }, "projectors[0].on_error.max_attempts", "between 1 and 100"},
		{"backoff against inherited max", func(c *Config) { c.Projectors[0].OnError.Initial = time.Minute }, "projectors[0].on_error.initial", "must not exceed"},
		{"sink missing", func(c *Config) { c.Projectors[0].Sink = Sink{} }, "projectors[0].sink", "is required: set one of sql"},
		{"no handlers", func(c *Config) { c.Projectors[0].Sink.SQL.Handlers = nil }, "projectors[0].sink.sql.handlers", "at least one handler"},
		{"empty handler key", func(c *Config) { c.Projectors[0].Sink.SQL.Handlers[" "] = "SELECT 1" }, `projectors[0].sink.sql.handlers[" "]`, "event type must not be empty"},
		{"empty handler sql", func(c *Config) { c.Projectors[0].Sink.SQL.Handlers["OrderPlaced"] = "  " }, "projectors[0].sink.sql.handlers[OrderPlaced]", "SQL statement must not be empty"},
		{"target url", func(c *Config) { c.Projectors[0].Sink.SQL.TargetURL = "postgres://[::1/db" }, "projectors[0].sink.sql.target_url", "not a valid PostgreSQL connection string"},
		{"empty event type", func(c *Config) { c.Projectors[0].EventTypes = []string{"OrderPlaced", ""} }, "projectors[0].event_types[1]", "must not be empty"},
		{"padded event type", func(c *Config) { c.Projectors[0].EventTypes = []string{"OrderPlaced", " ItemAdded"} }, "projectors[0].event_types[1]", "leading or trailing spaces"},
		{"duplicate event type", func(c *Config) { c.Projectors[0].EventTypes = []string{"OrderPlaced", "OrderPlaced"} }, "projectors[0].event_types[1]", "already listed as event_types[0]"},
		{"handler not read", func(c *Config) { c.Projectors[0].EventTypes = []string{"ItemAdded"} }, "projectors[0].sink.sql.handlers[OrderPlaced]", "never runs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tc.mutate(c)
			ps := requireProblems(t, c.Validate())
			require.Equal(t, []string{tc.path}, paths(ps), "%v", ps)
			require.Contains(t, ps[0].Message, tc.msg)
		})
	}
}

func TestValidateAcceptsEdges(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name   string
		mutate func(c *Config)
	}{
		{"position ordering without transaction id", func(c *Config) {
			c.Source.Ordering, c.Source.Columns.TransactionID = "position", ""
		}},
		{"unqualified table with $", func(c *Config) { c.Source.Table = "Events_2024$" }},
		{"http disabled", func(c *Config) { c.HTTP.Listen = "" }},
		{"http random port", func(c *Config) { c.HTTP.Listen = "127.0.0.1:0" }},
		{"http ipv6", func(c *Config) { c.HTTP.Listen = "[::1]:7464" }},
		{"keyword/value dsn", func(c *Config) { c.Database.URL = "host=localhost dbname=app user=app password='a b'" }},
		{"wildcard handler", func(c *Config) {
			c.Projectors[0].EventTypes = []string{"ItemAdded"}
			c.Projectors[0].Sink.SQL.Handlers = map[string]string{"*": "SELECT 1"}
		}},
		{"node expiry just above the lease", func(c *Config) {
			c.Coordination.LeaseTimeout, c.Coordination.NodeExpiry = time.Minute, time.Minute+time.Millisecond
		}},
		{"node expiry range", func(c *Config) { c.Coordination.NodeExpiry = 336 * time.Hour }},
		{"limits", func(c *Config) {
			c.Database.MaxConns = 1000
			c.Source.PollInterval = time.Minute
			c.Projectors[0].BatchSize = 10000
			c.Projectors[0].OnError.MaxAttempts = 100
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := validConfig()
			tc.mutate(c)
			require.NoError(t, c.Validate())
		})
	}
}

func TestValidateProjectorNames(t *testing.T) {
	t.Parallel()

	c := validConfig()
	sink := c.Projectors[0].Sink
	for _, name := range []string{"orders", "Orders", "", "orders", "a b", strings.Repeat("x", 64), "ok.name-2_x", "orders"} {
		c.Projectors = append(c.Projectors, Projector{Name: name, Sink: sink})
	}
	ps := requireProblems(t, c.Validate())
	var lines []string
	for _, p := range ps {
		lines = append(lines, p.String())
	}
	require.Equal(t, []string{
		`projectors[1].name: "orders" is already the name of projectors[0]`,
		`projectors[2].name: "Orders" must be 1 to 63 of a-z, 0-9, _, . and -`,
		`projectors[3].name: is required`,
		`projectors[4].name: "orders" is already the name of projectors[0]`,
		`projectors[5].name: "a b" must be 1 to 63 of a-z, 0-9, _, . and -`,
		fmt.Sprintf(`projectors[6].name: %q must be 1 to 63 of a-z, 0-9, _, . and -`, strings.Repeat("x", 64)),
		`projectors[8].name: "orders" is already the name of projectors[0]`,
	}, lines)
}

func TestValidateInheritedProblemsReportedOnce(t *testing.T) {
	t.Parallel()

	c := validConfig()
	c.Defaults.BatchSize = 0
	c.Defaults.OnError.Then = "nope"
	c.Projectors = append(c.Projectors, c.Projectors[0], c.Projectors[0])
	c.Projectors[1].Name, c.Projectors[2].Name = "b", "c"
	ps := requireProblems(t, c.Validate())
	require.Equal(t, []string{"defaults.batch_size", "defaults.on_error.then"}, paths(ps))
}

func TestValidationErrorFormat(t *testing.T) {
	t.Parallel()

	err := &ValidationError{Problems: []Problem{
		{Path: "projectors[2].batch_size", Message: "must be between 1 and 10000"},
		{Path: "", Message: "whole file"},
		{Path: "a\nb", Message: "x\ty"},
	}}
	require.Equal(t, "projectors[2].batch_size: must be between 1 and 10000\nwhole file\na\\nb: x\\ty", err.Error())
	require.NotEmpty(t, (&ValidationError{}).Error())
}

func TestNaturalOrder(t *testing.T) {
	t.Parallel()

	ps := []Problem{{Path: "projectors[10].name"}, {Path: "projectors[9].name"}, {Path: "database.url"}, {Path: "projectors[9]"}}
	sortProblems(ps)
	require.Equal(t, []string{"database.url", "projectors[9]", "projectors[9].name", "projectors[10].name"}, paths(ps))
}
