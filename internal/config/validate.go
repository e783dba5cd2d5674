package config

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgconn"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path names the field in the file's terms, e.g.
	// "projectors[2].batch_size"; empty for a problem with the whole file.
	Path string
	// Message says what is wrong, never repeating a secret.
	Message string
}

// String formats the problem as "path: message".
func (p Problem) String() string {
	path, msg := printable(p.Path), printable(p.Message)
	if path == "" {
		return msg
	}
	return path + ": " + msg
}

// ValidationError lists every problem found in a configuration, so that an
// operator fixes them in one round instead of one per restart.
type ValidationError struct {
	Problems []Problem
}

// Error lists the problems one per line.
func (e *ValidationError) Error() string {
	if len(e.Problems) == 0 {
		return "invalid configuration"
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// printable escapes control characters, which would otherwise break the
// one-problem-per-line output (a YAML key may contain a newline).
func printable(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) < 0 && strings.ToValidUTF8(s, "") == s {
		return s
	}
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// Validate checks c and returns a *ValidationError listing every problem, or
// nil. It checks effective projector values, i.e. with defaults applied, so
// it gives the same answer for a loaded Config and for one built in code.
//
// A configuration without projectors is valid: `migrate`, `status` and the
// like need none, and a replica with nothing to run is not misconfigured.
// Commands that run projectors decide themselves whether zero is an error.
//
// Validate parses connection strings with pgconn.ParseConfig, which like
// libpq also consults PG* environment variables and the files they name.
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return &ValidationError{Problems: ps}
	}
	return nil
}

// Projector returns the projector called name, pointing into c.Projectors.
func (c *Config) Projector(name string) (*Projector, bool) {
	for i := range c.Projectors {
		if c.Projectors[i].Name == name {
			return &c.Projectors[i], true
		}
	}
	return nil, false
}

// Enumerations accepted by Validate.
var (
	orderings   = []string{"xid8", "position"}
	logLevels   = []string{"debug", "info", "warn", "error"}
	logFormats  = []string{"json", "console"}
	errorThens  = []string{"halt", "skip", "dead_letter"}
	identRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)
	projectorRe = regexp.MustCompile(`^[a-z0-9_.-]{1,63}$`)
)

// Limits enforced by Validate.
const (
	maxIdentLen    = 63 // PostgreSQL's NAMEDATALEN - 1
	maxMaxConns    = 1000
	maxBatchSize   = 10000
	maxMaxAttempts = 100
	maxKeepalives  = 127 // Linux rejects a larger TCP_KEEPCNT
)

type checker struct {
	problems []Problem
}

func (k *checker) add(path, format string, args ...any) {
	k.problems = append(k.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (k *checker) intRange(path string, v, lo, hi int64) {
	if v < lo || v > hi {
		k.add(path, "must be between %d and %d", lo, hi)
	}
}

func (k *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		k.add(path, "must be a positive duration such as \"5s\"")
	}
}

func (k *checker) durationRange(path string, d, lo, hi time.Duration) {
	if d < lo || d > hi {
		k.add(path, "must be between %s and %s", lo, hi)
	}
}

func (k *checker) oneOf(path, v string, allowed []string) {
	if !slices.Contains(allowed, v) {
		k.add(path, "%q is not one of %s", v, strings.Join(allowed, ", "))
	}
}

// ident checks a SQL identifier, optionally schema-qualified.
func (k *checker) ident(path, v string, qualified bool) {
	parts := strings.Split(v, ".")
	ok := len(parts) == 1 || (qualified && len(parts) == 2)
	for _, p := range parts {
		ok = ok && identRe.MatchString(p) && len(p) <= maxIdentLen
	}
	if ok {
		return
	}
	what := "a SQL identifier"
	if qualified {
		what = "a SQL identifier, optionally schema-qualified (schema.table),"
	}
	k.add(path, "%q is not %s made of letters, digits, _ and $, starting with a letter or _, at most %d bytes", v, what, maxIdentLen)
}

// dsn checks that a connection string parses, without repeating its password.
func (k *checker) dsn(path, dsn string) {
	_, err := pgconn.ParseConfig(dsn)
	if err == nil {
		return
	}
	msg := err.Error()
	// pgconn starts with "cannot parse `<dsn, best-effort redacted>`: ".
	if rest, ok := strings.CutPrefix(msg, "cannot parse `"); ok {
		if i := strings.Index(rest, "`: "); i >= 0 {
			msg = rest[i+3:]
		}
	}
	k.add(path, "is not a valid PostgreSQL connection string: %s", scrubSecrets(msg, dsn))
}

func (c *Config) problems() []Problem {
	var k checker
	c.checkDatabase(&k)
	c.checkSource(&k)
	c.checkCoordination(&k)
	if c.HTTP.Listen != "" {
		checkListen(&k, "http.listen", c.HTTP.Listen)
	}
	k.positive("metrics.refresh_interval", c.Metrics.RefreshInterval)
	k.oneOf("log.level", c.Log.Level, logLevels)
	k.oneOf("log.format", c.Log.Format, logFormats)
	k.positive("shutdown_timeout", c.ShutdownTimeout)
	k.intRange("defaults.batch_size", int64(c.Defaults.BatchSize), 1, maxBatchSize)
	checkPolicy(&k, "defaults.on_error", c.Defaults.OnError, nil)
	c.checkProjectors(&k)
	return k.problems
}

func (c *Config) checkDatabase(k *checker) {
	d := c.Database
	if d.URL == "" {
		k.add("database.url", "is required: set database.url, database.url_file or %s", envVar("database.url"))
	} else {
		k.dsn("database.url", d.URL)
	}
	k.intRange("database.max_conns", int64(d.MaxConns), 1, maxMaxConns)
	k.positive("database.connect_timeout", d.ConnectTimeout)
	k.positive("database.query_timeout", d.QueryTimeout)
}

func (c *Config) checkSource(k *checker) {
	s := c.Source
	_, knownPreset := Presets[s.Preset]
	if !knownPreset {
		names := make([]string, 0, len(Presets))
		for n := range Presets {
			names = append(names, n)
		}
		sort.Strings(names)
		k.add("source.preset", "%q is not a known preset (%s)", s.Preset, strings.Join(names, ", "))
	}
	k.ident("source.table", s.Table, true)
	k.oneOf("source.ordering", s.Ordering, orderings)

	cols := reflect.ValueOf(s.Columns)
	for i := range cols.NumField() {
		name := tagName(cols.Type().Field(i))
		path := "source.columns." + name
		v := cols.Field(i).String()
		if v != "" {
			k.ident(path, v, false)
			continue
		}
		optional := name == "event_id" || (name == "transaction_id" && s.Ordering == "position")
		// An unknown preset leaves columns empty; that problem is already listed.
		if !optional && knownPreset {
			k.add(path, "is required")
		}
	}
	k.durationRange("source.poll_interval", s.PollInterval, time.Millisecond, time.Minute)
	if s.Listen || s.NotifyChannel != "" {
		if s.NotifyChannel == "" {
			k.add("source.notify_channel", "is required when source.listen is true")
		} else {
			k.ident("source.notify_channel", s.NotifyChannel, false)
		}
	}
}

func (c *Config) checkCoordination(k *checker) {
	co := c.Coordination
	if co.URL != "" {
		k.dsn("coordination.url", co.URL)
	}
	k.positive("coordination.acquire_interval", co.AcquireInterval)
	k.positive("coordination.heartbeat_interval", co.HeartbeatInterval)
	k.positive("coordination.lease_timeout", co.LeaseTimeout)
	if co.HeartbeatInterval > 0 && co.LeaseTimeout > 0 && co.LeaseTimeout <= 2*co.HeartbeatInterval {
		k.add("coordination.lease_timeout", "must be more than twice coordination.heartbeat_interval (%s), so that one late heartbeat does not depose a live leader", 2*co.HeartbeatInterval)
	}
	k.positive("coordination.tcp_user_timeout", co.TCPUserTimeout)
	// PostgreSQL's tcp_keepalives_* settings have a resolution of one second.
	if co.KeepaliveIdle < time.Second {
		k.add("coordination.keepalive_idle", "must be at least 1s")
	}
	if co.KeepaliveInterval < time.Second {
		k.add("coordination.keepalive_interval", "must be at least 1s")
	}
	k.intRange("coordination.keepalive_count", int64(co.KeepaliveCount), 1, maxKeepalives)
}

func checkListen(k *checker, path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		if n, perr := strconv.ParseUint(port, 10, 16); perr == nil && n <= 65535 {
			return
		}
	}
	k.add(path, "%q is not host:port or :port (use \"\" to disable the server)", addr)
}

// checkPolicy checks an error policy. With base set, a field equal to the
// base's is inherited and was checked there already.
func checkPolicy(k *checker, path string, p ErrorPolicy, base *ErrorPolicy) {
	all := base == nil
	var b ErrorPolicy
	if base != nil {
		b = *base
	}
	if all || p.MaxAttempts != b.MaxAttempts {
		k.intRange(path+".max_attempts", int64(p.MaxAttempts), 1, maxMaxAttempts)
	}
	if all || p.Initial != b.Initial {
		k.positive(path+".initial", p.Initial)
	}
	if all || p.Max != b.Max {
		k.positive(path+".max", p.Max)
	}
	if p.Initial > 0 && p.Max > 0 && p.Initial > p.Max && (all || p.Initial != b.Initial || p.Max != b.Max) {
		k.add(path+".initial", "must not exceed %s.max (%s)", path, p.Max)
	}
	if all || p.Then != b.Then {
		k.oneOf(path+".then", p.Then, errorThens)
	}
}

func (c *Config) checkProjectors(k *checker) {
	names := map[string]int{}
	for i, p := range c.Projectors {
		path := fmt.Sprintf("projectors[%d]", i)
		switch {
		case p.Name == "":
			k.add(path+".name", "is required")
		case !projectorRe.MatchString(p.Name):
			k.add(path+".name", "%q must be 1 to 63 of a-z, 0-9, _, . and -", p.Name)
		}
		if first, dup := names[p.Name]; dup && p.Name != "" {
			k.add(path+".name", "%q is already the name of projectors[%d]", p.Name, first)
		} else {
			names[p.Name] = i
		}

		eff := effectiveProjector(p, c.Defaults)
		if eff.BatchSize != c.Defaults.BatchSize {
			k.intRange(path+".batch_size", int64(eff.BatchSize), 1, maxBatchSize)
		}
		checkPolicy(k, path+".on_error", eff.OnError, &c.Defaults.OnError)

		seen := map[string]int{}
		for j, t := range p.EventTypes {
			tp := fmt.Sprintf("%s.event_types[%d]", path, j)
			switch {
			case strings.TrimSpace(t) == "":
				k.add(tp, "must not be empty")
			case strings.TrimSpace(t) != t:
				k.add(tp, "%q has leading or trailing spaces", t)
			}
			if first, dup := seen[t]; dup {
				k.add(tp, "%q is already listed as event_types[%d]", t, first)
			} else {
				seen[t] = j
			}
		}
		checkSink(k, path+".sink", p.Sink, p.EventTypes)
	}
}

// sinkKinds lists the sink kinds that are set, by key.
func sinkKinds(s Sink) (set, all []string) {
	v := reflect.ValueOf(s)
	for i := range v.NumField() {
		name := tagName(v.Type().Field(i))
		all = append(all, name)
		if f := v.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			set = append(set, name)
		}
	}
	return set, all
}

func checkSink(k *checker, path string, s Sink, eventTypes []string) {
	set, all := sinkKinds(s)
	switch {
	case len(set) == 0:
		k.add(path, "is required: set one of %s", strings.Join(all, ", "))
		return
	case len(set) > 1:
		k.add(path, "sets %s: set exactly one", strings.Join(set, " and "))
	}
	if s.SQL == nil {
		return
	}
	sp := path + ".sql"
	if s.SQL.TargetURL != "" {
		k.dsn(sp+".target_url", s.SQL.TargetURL)
	}
	if len(s.SQL.Handlers) == 0 {
		k.add(sp+".handlers", "needs at least one handler (event type: SQL statement)")
	}
	keys := make([]string, 0, len(s.SQL.Handlers))
	for t := range s.SQL.Handlers {
		keys = append(keys, t)
	}
	sort.Strings(keys)
	for _, t := range keys {
		hp := fmt.Sprintf("%s.handlers[%s]", sp, t)
		if !plainHandlerKey.MatchString(t) {
			hp = fmt.Sprintf("%s.handlers[%q]", sp, t)
		}
		switch {
		case strings.TrimSpace(t) == "":
			k.add(hp, "event type must not be empty (use \"*\" for every type)")
		case t != "*" && len(eventTypes) > 0 && !slices.Contains(eventTypes, t):
			k.add(hp, "never runs: %q is not in event_types (event types are case-sensitive)", t)
		}
		if strings.TrimSpace(s.SQL.Handlers[t]) == "" {
			k.add(hp, "SQL statement must not be empty")
		}
	}
}

var plainHandlerKey = regexp.MustCompile(`^[A-Za-z0-9_.:/*-]+$`)

// sortProblems orders problems by path, comparing numbers in indices by
// value so that projectors[10] follows projectors[9].
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return naturalLess(ps[i].Path, ps[j].Path) })
}

func naturalLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digitPrefix(a), digitPrefix(b)
		if da != "" && db != "" {
			if len(da) != len(db) {
				return len(da) < len(db)
			}
			if da != db {
				return da < db
			}
			a, b = a[len(da):], b[len(db):]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digitPrefix(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}
