package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/projectord/projectord/internal/runner"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"
)

// testURL is a valid database URL for tests that are not about the URL.
const testURL = "postgres://app:pw@localhost:5432/app"

// validProjector is a projector section that passes validation.
const validProjector = `
projectors:
  - name: orders
    event_types: [OrderPlaced]
    sink:
      sql:
        handlers:
          OrderPlaced: INSERT INTO orders (id) VALUES (@data->>'id')
`

// envMap returns an environment lookup backed by m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// requireProblems asserts err is a *ValidationError and returns its problems.
func requireProblems(t *testing.T, err error) []Problem {
	t.Helper()
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.NotEmpty(t, ve.Problems)
	return ve.Problems
}

// paths returns the path of every problem.
func paths(ps []Problem) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Path
	}
	return out
}

// writeFile writes content to name in a fresh temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestLoadReportsEveryMistakeAtOnce(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database:
  url: `+testURL+`
  max_conns: 0
log:
  level: loud
projectors:
  - name: orders
    batchsize: 10
    event_types: [OrderPlaced]
    sink:
      sql:
        handlers:
          OrderPlaced: SELECT 1
`), nil)
	require.Nil(t, cfg)
	ps := requireProblems(t, err)
	require.ElementsMatch(t, []string{"database.max_conns", "log.level", "projectors[0].batchsize"}, paths(ps))

	msg := err.Error()
	require.Contains(t, msg, "database.max_conns: must be between 1 and 1000")
	require.Contains(t, msg, `log.level: "loud" is not one of debug, info, warn, error`)
	require.Contains(t, msg, `projectors[0].batchsize: unknown key (did you mean "batch_size"?)`)
	require.Len(t, strings.Split(msg, "\n"), 3)
}

func TestLoadUnknownKeysEverywhere(t *testing.T) {
	t.Parallel()

	_, err := LoadBytes([]byte(`
databse: {url: x}
database: {url: `+testURL+`, urll: y}
coordination: {leasetimeout: 3s}
projectors:
  - name: orders
    sink:
      sql:
        handlers: {A: SELECT 1}
        target: postgres://h/db
      kafka: {}
`), nil)
	ps := requireProblems(t, err)
	require.ElementsMatch(t, []string{
		"databse",
		"database.urll",
		"coordination.leasetimeout",
		"projectors[0].sink.sql.target",
		"projectors[0].sink.kafka",
	}, paths(ps))
	require.Contains(t, err.Error(), `databse: unknown key (did you mean "database"?)`)
	require.Contains(t, err.Error(), `coordination.leasetimeout: unknown key (did you mean "lease_timeout"?)`)
	require.Contains(t, err.Error(), `projectors[0].sink.sql.target: unknown key (did you mean "target_url"?)`)
}

func TestLoadTypeErrorsHavePaths(t *testing.T) {
	t.Parallel()

	_, err := LoadBytes([]byte(`
database:
  url: `+testURL+`
  max_conns: 4294967304   # would wrap around to 8 in an int32
source:
  poll_interval: 50       # no unit
  listen: maybe
coordination:
  lease_timeout: [1s]
projectors:
  - name: orders
    batch_size: 1.5
    sink: sql
`), nil)
	ps := requireProblems(t, err)
	require.ElementsMatch(t, []string{
		"database.max_conns",
		"source.poll_interval",
		"source.listen",
		"coordination.lease_timeout",
		"projectors[0].batch_size",
		"projectors[0].sink",
	}, paths(ps))
	require.Contains(t, err.Error(), "source.poll_interval: must be a duration")
	require.Contains(t, err.Error(), "projectors[0].sink: must be a mapping, not a string")
}

func TestLoadEnvOverridesNestedKeys(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database: {url: "postgres://file@h/db"}
coordination: {lease_timeout: 30s}
`), envMap(map[string]string{
		"PROJECTORD_DATABASE_URL":               testURL,
		"PROJECTORD_COORDINATION_LEASE_TIMEOUT": "20s",
		"PROJECTORD_LOG_LEVEL":                  "debug",
		"PROJECTORD_SOURCE_COLUMNS_EVENT_ID":    "event_id",
		"PROJECTORD_SOURCE_LISTEN":              "true",
		"PROJECTORD_DATABASE_MAX_CONNS":         "16",
		"PROJECTORD_DATABASE_GROUP_COMMIT":      "false",
		"PROJECTORD_HTTP_LISTEN":                "", // empty counts as unset
	}))
	require.NoError(t, err)
	require.Equal(t, testURL, cfg.Database.URL)
	require.Equal(t, 20*time.Second, cfg.Coordination.LeaseTimeout)
	require.Equal(t, time.Hour, cfg.Coordination.NodeExpiry, "node_expiry defaults to 1h")
	require.Equal(t, "debug", cfg.Log.Level)
	require.Equal(t, "event_id", cfg.Source.Columns.EventID)
	require.Equal(t, "global_position", cfg.Source.Columns.Position)
	require.True(t, cfg.Source.Listen)
	require.EqualValues(t, 16, cfg.Database.MaxConns)
	require.False(t, cfg.Database.GroupCommit, "group_commit defaults to true")
	require.Equal(t, ":7464", cfg.HTTP.Listen)
}

func TestLoadEnvWithoutFile(t *testing.T) {
	t.Parallel()

	cfg, err := Load(LoadOptions{
		LookPaths: []string{filepath.Join(t.TempDir(), "missing.yaml")},
		Env:       envMap(map[string]string{"PROJECTORD_DATABASE_URL": testURL}),
	})
	require.NoError(t, err)
	require.Equal(t, testURL, cfg.Database.URL)
	require.Empty(t, cfg.Projectors)
}

func TestLoadEnvReachesEveryKey(t *testing.T) {
	t.Parallel()

	// A value of the right type for every scalar key, different from its default.
	env := map[string]string{}
	want := map[string]any{}
	for _, l := range leaves() {
		var s string
		var v any
		switch reflect.TypeFor[Config]().FieldByIndex(l.index).Type {
		case durationType:
			s, v = "77s", 77*time.Second
		case reflect.TypeFor[string]():
			s, v = "env_"+strings.ReplaceAll(l.key, ".", "_"), "env_"+strings.ReplaceAll(l.key, ".", "_")
		case reflect.TypeFor[runner.Then]():
			s, v = "env_"+strings.ReplaceAll(l.key, ".", "_"), runner.Then("env_"+strings.ReplaceAll(l.key, ".", "_"))
		case reflect.TypeFor[bool]():
			s, v = "true", true
		case reflect.TypeFor[int]():
			s, v = "77", 77
		case reflect.TypeFor[int32]():
			s, v = "77", int32(77)
		default:
			t.Fatalf("no test value for %s", l.key)
		}
		name := envVar(l.key)
		_, dup := env[name]
		require.False(t, dup, "two keys share %s", name)
		env[name] = s
		want[l.key] = v
	}

	cfg, problems, err := decode(nil, "test", LoadOptions{Env: envMap(env)})
	require.NoError(t, err)
	require.Empty(t, problems)
	for _, l := range leaves() {
		require.Equal(t, want[l.key], leafValue(cfg, l), l.key)
	}
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()

	file := writeFile(t, "projectord.yaml", `
database: {url: "`+testURL+`"}
log: {level: warn}
coordination: {lease_timeout: 30s}
`)
	newFlags := func(args ...string) *pflag.FlagSet {
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		fs.String("log-level", "info", "")
		fs.Duration("coordination.lease_timeout", 15*time.Second, "")
		fs.Int32("database.max_conns", 8, "")
		fs.String("unrelated", "", "")
		require.NoError(t, fs.Parse(args))
		return fs
	}
	load := func(file string, env map[string]string, fs *pflag.FlagSet) *Config {
		t.Helper()
		if env == nil {
			env = map[string]string{"PROJECTORD_DATABASE_URL": testURL}
		}
		cfg, err := Load(LoadOptions{
			File:      file,
			Flags:     fs,
			FlagKeys:  map[string]string{"log-level": "log.level"},
			Env:       envMap(env),
			LookPaths: []string{},
		})
		require.NoError(t, err)
		return cfg
	}

	// Default only; flags that were not set do not count, whatever their default.
	cfg := load("", nil, newFlags())
	require.Equal(t, "info", cfg.Log.Level)
	require.Equal(t, 15*time.Second, cfg.Coordination.LeaseTimeout)

	// File over default.
	cfg = load(file, nil, newFlags())
	require.Equal(t, "warn", cfg.Log.Level)
	require.Equal(t, 30*time.Second, cfg.Coordination.LeaseTimeout)

	// Environment over file.
	env := map[string]string{"PROJECTORD_LOG_LEVEL": "error", "PROJECTORD_COORDINATION_LEASE_TIMEOUT": "20s"}
	cfg = load(file, env, newFlags())
	require.Equal(t, "error", cfg.Log.Level)
	require.Equal(t, 20*time.Second, cfg.Coordination.LeaseTimeout)

	// Flag over environment.
	cfg = load(file, env, newFlags("--log-level=debug", "--coordination.lease_timeout=40s", "--database.max_conns=3"))
	require.Equal(t, "debug", cfg.Log.Level)
	require.Equal(t, 40*time.Second, cfg.Coordination.LeaseTimeout)
	require.EqualValues(t, 3, cfg.Database.MaxConns)
}

// TestLoadOverridesAndContent checks the sources a command such as dev
// uses: Content instead of a file, overrides above flags, decoded and
// validated like every other value, and NoEnv.
func TestLoadOverridesAndContent(t *testing.T) {
	t.Parallel()

	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	DefineFlag(fs, "log.level", "log level")
	DefineFlag(fs, "http.listen", "address")
	require.NoError(t, fs.Parse([]string{"--log.level=warn", "--http.listen="}))
	named := writeFile(t, "named.yaml", "log: {level: error}\n")
	load := func(overrides map[string]any) (*Config, error) {
		return Load(LoadOptions{
			Content:   []byte("database: {url: 'postgres://file@h/db'}\nlog: {level: debug, format: console}\n"),
			File:      named, // not read: Content is the file
			Flags:     fs,
			Overrides: overrides,
			Env:       NoEnv,
		})
	}

	cfg, err := load(nil)
	require.NoError(t, err)
	require.Equal(t, "postgres://file@h/db", cfg.Database.URL, "Content is the file")
	require.Equal(t, "console", cfg.Log.Format)
	require.Equal(t, "warn", cfg.Log.Level, "a flag over the file")
	require.Empty(t, cfg.HTTP.Listen, "an empty flag is a value")

	cfg, err = load(map[string]any{"log.level": "info", "database.url": testURL, "source.listen": true, "database.max_conns": "3"})
	require.NoError(t, err)
	require.Equal(t, "info", cfg.Log.Level, "an override over a flag")
	require.Equal(t, testURL, cfg.Database.URL)
	require.True(t, cfg.Source.Listen)
	require.EqualValues(t, 3, cfg.Database.MaxConns)

	_, err = load(map[string]any{"database.max_conns": 0, "source.listen": "maybe"})
	ps := requireProblems(t, err)
	require.ElementsMatch(t, []string{"database.max_conns", "source.listen"}, paths(ps))
	require.Contains(t, err.Error(), "database.max_conns: must be between 1 and 1000")

	_, err = load(map[string]any{"log.lvl": "info"})
	require.ErrorContains(t, err, `override of "log.lvl", which is not a config key`)
}

// TestDefineFlag checks that a flag's help names its key's environment
// variable and default, from the key model, and that it binds to its key.
func TestDefineFlag(t *testing.T) {
	t.Parallel()

	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	DefineFlag(fs, "database.url", "PostgreSQL URL of the event store")
	DefineFlag(fs, "log.level", "log level: debug, info, warn, error")
	DefineFlag(fs, "coordination.lease_timeout", "lease")
	require.Equal(t, "PostgreSQL URL of the event store ($PROJECTORD_DATABASE_URL)", fs.Lookup("database.url").Usage)
	require.Equal(t, "log level: debug, info, warn, error ($PROJECTORD_LOG_LEVEL; default info)", fs.Lookup("log.level").Usage)
	require.Equal(t, "lease ($PROJECTORD_COORDINATION_LEASE_TIMEOUT; default 15s)", fs.Lookup("coordination.lease_timeout").Usage)
	require.Panics(t, func() { DefineFlag(fs, "log.lvl", "") })

	require.NoError(t, fs.Parse([]string{"--coordination.lease_timeout=20s"}))
	cfg, err := Load(LoadOptions{Flags: fs, Env: envMap(map[string]string{"PROJECTORD_DATABASE_URL": testURL}), LookPaths: []string{}})
	require.NoError(t, err)
	require.Equal(t, 20*time.Second, cfg.Coordination.LeaseTimeout)
	require.Equal(t, testURL, cfg.Database.URL, "an unset flag does not hide the environment")
}

func TestLoadFlagKeysMistakes(t *testing.T) {
	t.Parallel()

	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.String("log-level", "", "")
	env := envMap(map[string]string{"PROJECTORD_DATABASE_URL": testURL})

	_, err := Load(LoadOptions{Flags: fs, FlagKeys: map[string]string{"log-level": "log.lvl"}, Env: env, LookPaths: []string{}})
	require.ErrorContains(t, err, `"log.lvl", which is not a config key`)
	_, err = Load(LoadOptions{Flags: fs, FlagKeys: map[string]string{"verbose": "log.level"}, Env: env, LookPaths: []string{}})
	require.ErrorContains(t, err, "--verbose, which is not defined")
}

func TestFindFile(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	first := filepath.Join(dir, "first.yaml")
	second := writeFile(t, "second.yaml", "")
	named := writeFile(t, "named.yaml", "")
	noEnv := envMap(nil)

	got, err := FindFile(LoadOptions{Env: noEnv, LookPaths: []string{first, second}})
	require.NoError(t, err)
	require.Equal(t, second, got, "the first existing look path wins")

	got, err = FindFile(LoadOptions{Env: envMap(map[string]string{EnvConfigFile: named}), LookPaths: []string{second}})
	require.NoError(t, err)
	require.Equal(t, named, got, "PROJECTORD_CONFIG wins over look paths")

	got, err = FindFile(LoadOptions{File: second, Env: envMap(map[string]string{EnvConfigFile: named})})
	require.NoError(t, err)
	require.Equal(t, second, got, "--config wins over PROJECTORD_CONFIG")

	got, err = FindFile(LoadOptions{Env: noEnv, LookPaths: []string{first}})
	require.NoError(t, err)
	require.Empty(t, got, "no file at all is fine")

	_, err = FindFile(LoadOptions{File: first, Env: noEnv})
	require.Error(t, err, "a named file must exist")
	_, err = FindFile(LoadOptions{Env: envMap(map[string]string{EnvConfigFile: first})})
	require.Error(t, err, "a file named by PROJECTORD_CONFIG must exist")
	_, err = Load(LoadOptions{File: first, Env: noEnv})
	require.ErrorContains(t, err, "first.yaml")
}

func TestLoadURLFile(t *testing.T) {
	t.Parallel()

	secretFile := writeFile(t, "database_url", "\n  "+testURL+"  \n")
	emptyFile := writeFile(t, "empty", " \n\t\n")

	cfg, err := LoadBytes([]byte("database: {url_file: "+secretFile+"}"), nil)
	require.NoError(t, err)
	require.Equal(t, testURL, cfg.Database.URL)
	require.Equal(t, secretFile, cfg.Database.URLFile)

	cfg, err = LoadBytes(nil, envMap(map[string]string{"PROJECTORD_DATABASE_URL_FILE": secretFile}))
	require.NoError(t, err)
	require.Equal(t, testURL, cfg.Database.URL)

	for name, tc := range map[string]struct {
		yaml, message string
	}{
		"both":    {"database: {url: " + testURL + ", url_file: " + secretFile + "}", "cannot be set together with database.url"},
		"missing": {"database: {url_file: " + filepath.Join(t.TempDir(), "nope") + "}", "cannot be read"},
		"empty":   {"database: {url_file: " + emptyFile + "}", "is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadBytes([]byte(tc.yaml), nil)
			ps := requireProblems(t, err)
			require.Equal(t, []string{"database.url_file"}, paths(ps), "no second complaint about database.url")
			require.Contains(t, ps[0].Message, tc.message)
		})
	}
}

func TestLoadKeepsHandlerKeyCase(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database: {url: "`+testURL+`"}
Projectors:
  - Name: orders
    event_types: [OrderPlaced, orderplaced, Orders.Item-Added]
    sink:
      SQL:
        handlers:
          OrderPlaced: SELECT 'upper'
          orderplaced: SELECT 'lower'
          Orders.Item-Added: SELECT 'dotted'
`), nil)
	require.NoError(t, err)
	p, ok := cfg.Projector("orders")
	require.True(t, ok)
	require.Equal(t, map[string]string{
		"OrderPlaced":       "SELECT 'upper'",
		"orderplaced":       "SELECT 'lower'",
		"Orders.Item-Added": "SELECT 'dotted'",
	}, p.Sink.SQL.Handlers)
	require.Equal(t, []string{"OrderPlaced", "orderplaced", "Orders.Item-Added"}, p.EventTypes)

	_, ok = cfg.Projector("missing")
	require.False(t, ok)
}

// TestLoadChecksProjectorKeysLikeEveryOther checks that the keys of a
// projector follow the rules of every other section: a key differing from
// another only in case, or joined with ".", is named as such, and null
// means unset. On the original code projectors were checked by another
// decoder, which called both "unknown key".
func TestLoadChecksProjectorKeysLikeEveryOther(t *testing.T) {
	t.Parallel()

	_, err := LoadBytes([]byte(`
database: {url: "`+testURL+`"}
projectors:
  - {name: a, Name: b, sink.sql: {handlers: {A: SELECT 1}}, sink: {sql: {handlers: {A: SELECT 1}}}}
`), nil)
	ps := requireProblems(t, err)
	require.Equal(t, []string{"projectors[0].name", `projectors[0]["sink.sql"]`}, paths(ps))
	require.Contains(t, err.Error(), "projectors[0].name: is set more than once (keys are not case-sensitive)")
	require.Contains(t, err.Error(), `projectors[0]["sink.sql"]: unknown key (nest keys instead of joining them with ".")`)

	cfg, err := LoadBytes([]byte(`
database: {url: "`+testURL+`"}
projectors:
  - {name: a, batch_size: ~, on_error: {then: ~}, sink: {sql: {handlers: {A: SELECT 1}}}}
`), nil)
	require.NoError(t, err)
	require.Equal(t, 500, cfg.Projectors[0].BatchSize)
	require.Equal(t, runner.ThenHalt, cfg.Projectors[0].OnError.Then)
}

func TestLoadHandlerCaseMismatchIsReported(t *testing.T) {
	t.Parallel()

	_, err := LoadBytes([]byte(`
database: {url: "`+testURL+`"}
projectors:
  - name: orders
    event_types: [OrderPlaced]
    sink: {sql: {handlers: {orderPlaced: SELECT 1}}}
`), nil)
	ps := requireProblems(t, err)
	require.Equal(t, []string{"projectors[0].sink.sql.handlers[orderPlaced]"}, paths(ps))
	require.Contains(t, ps[0].Message, "never runs")
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte("database: {url: \""+testURL+"\"}\n"+validProjector), nil)
	require.NoError(t, err)

	// Spelled out rather than taken from Default(), so that a default
	// changed by accident fails here.
	policy := ErrorPolicy{MaxAttempts: 5, Initial: 100 * time.Millisecond, Max: 30 * time.Second, Then: "halt"}
	require.Equal(t, &Config{
		Database: Database{URL: testURL, MaxConns: 8, ConnectTimeout: 5 * time.Second, QueryTimeout: 30 * time.Second, GroupCommit: true},
		Source: Source{
			Preset: "native",
			Table:  "public.events",
			Columns: Columns{
				Position:      "global_position",
				TransactionID: "transaction_id",
				StreamID:      "stream_id",
				StreamVersion: "stream_version",
				EventType:     "event_type",
				Data:          "data",
				Metadata:      "metadata",
				CreatedAt:     "created_at",
				EventID:       "",
			},
			Ordering:      "xid8",
			PollInterval:  50 * time.Millisecond,
			Listen:        false,
			NotifyChannel: "projectord_events",
			SharedReads:   true,
		},
		Coordination: Coordination{
			LockNamespace:     1886547818,
			AcquireInterval:   time.Second,
			HeartbeatInterval: time.Second,
			LeaseTimeout:      15 * time.Second,
			NodeExpiry:        time.Hour,
			Balance:           true,
			TCPUserTimeout:    10 * time.Second,
			KeepaliveIdle:     5 * time.Second,
			KeepaliveInterval: 2 * time.Second,
			KeepaliveCount:    3,
		},
		HTTP:            HTTP{Listen: ":7464"},
		Metrics:         Metrics{RefreshInterval: 5 * time.Second},
		Log:             Log{Level: "info", Format: "json"},
		ShutdownTimeout: 25 * time.Second,
		Defaults:        ProjectorDefaults{BatchSize: 500, OnError: policy},
		Projectors: []Projector{{
			Name:       "orders",
			EventTypes: []string{"OrderPlaced"},
			BatchSize:  500,
			OnError:    policy,
			Weight:     1,
			Version:    1,
			Sink: Sink{SQL: &SQLSink{Handlers: map[string]string{
				"OrderPlaced": "INSERT INTO orders (id) VALUES (@data->>'id')",
			}}},
		}},
	}, cfg)

	def := Default()
	require.Equal(t, cfg.Source.Columns, Presets[DefaultPreset])
	require.NotEmpty(t, DefaultNodeID())
	require.Equal(t, "native", def.Source.Preset)
}

func TestLoadNullMeansDefault(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database: {url: "`+testURL+`", max_conns: ~}
http:
log: {level: null}
`), nil)
	require.NoError(t, err)
	require.EqualValues(t, 8, cfg.Database.MaxConns)
	require.Equal(t, ":7464", cfg.HTTP.Listen)
	require.Equal(t, "info", cfg.Log.Level)
}

func TestLoadColumnsOverridePreset(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database: {url: "`+testURL+`"}
source:
  ordering: position
  columns: {position: id, transaction_id: "", event_id: event_uuid}
`), nil)
	require.NoError(t, err)
	want := Presets["native"]
	want.Position, want.TransactionID, want.EventID = "id", "", "event_uuid"
	require.Equal(t, want, cfg.Source.Columns)
}

func TestLoadProjectorDefaultsApplied(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database: {url: "`+testURL+`"}
defaults:
  batch_size: 100
  on_error: {max_attempts: 7, then: skip}
projectors:
  - name: inherits
    sink: {sql: {handlers: {"*": SELECT 1}}}
  - name: overrides
    batch_size: 20
    on_error: {max: 1s, then: dead_letter}
    sink: {sql: {handlers: {"*": SELECT 1}}}
`), nil)
	require.NoError(t, err)
	inherits, _ := cfg.Projector("inherits")
	require.Equal(t, 100, inherits.BatchSize)
	require.Equal(t, ErrorPolicy{MaxAttempts: 7, Initial: 100 * time.Millisecond, Max: 30 * time.Second, Then: "skip"}, inherits.OnError)
	overrides, _ := cfg.Projector("overrides")
	require.Equal(t, 20, overrides.BatchSize)
	require.Equal(t, ErrorPolicy{MaxAttempts: 7, Initial: 100 * time.Millisecond, Max: time.Second, Then: "dead_letter"}, overrides.OnError)
}

func TestLoadRejectsBadFiles(t *testing.T) {
	t.Parallel()

	for name, doc := range map[string]string{
		"syntax":    "database: {url: [",
		"top list":  "- a\n- b\n",
		"top value": "hello",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadBytes([]byte(doc), nil)
			require.Error(t, err)
			var ve *ValidationError
			require.NotErrorAs(t, err, &ve)
		})
	}

	_, err := LoadBytes([]byte("database: {url: a}\nDatabase: {url: b}\n"), nil)
	ps := requireProblems(t, err)
	require.Contains(t, paths(ps), "database")

	_, err = LoadBytes([]byte("database.url: "+testURL+"\n"), nil)
	ps = requireProblems(t, err)
	require.Contains(t, paths(ps), `["database.url"]`)
}

func TestExampleConfig(t *testing.T) {
	t.Parallel()

	data, err := os.ReadFile("../../configs/example.yaml")
	require.NoError(t, err)
	cfg, err := LoadBytes(data, nil)
	require.NoError(t, err)
	require.Len(t, cfg.Projectors, 3)

	// Every key appears, url_file in a comment since it excludes url.
	doc, err := parseYAML(data)
	require.NoError(t, err)
	for _, l := range leaves() {
		if l.key == "database.url_file" {
			require.Contains(t, string(data), "# url_file: ")
			continue
		}
		var node any = doc
		for _, seg := range strings.Split(l.key, ".") {
			m, ok := node.(map[string]any)
			require.True(t, ok, l.key)
			node, ok = m[seg]
			require.True(t, ok, "example.yaml lacks %s", l.key)
		}
	}
	used := map[string]bool{}
	for _, p := range doc["projectors"].([]any) {
		collectKeys(p, used)
	}
	for _, t2 := range []reflect.Type{reflect.TypeFor[Projector](), reflect.TypeFor[ErrorPolicy](), reflect.TypeFor[SQLSink](), reflect.TypeFor[HTTPSink]()} {
		for i := range t2.NumField() {
			require.True(t, used[tagName(t2.Field(i))], "no projector in example.yaml sets %s", tagName(t2.Field(i)))
		}
	}
}

// collectKeys records every mapping key in v, at any depth.
func collectKeys(v any, into map[string]bool) {
	if m, ok := v.(map[string]any); ok {
		for k, val := range m {
			into[k] = true
			collectKeys(val, into)
		}
	}
}
