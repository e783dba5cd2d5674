package config

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/store"
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

// ValidationError lists the problems found in a configuration, so that an
// operator fixes them in one round instead of one per restart: every
// problem, up to maxReportedProblems of them.
type ValidationError struct {
	Problems []Problem
	// Omitted counts the problems found beyond Problems. A hostile or
	// mangled file can have hundreds of thousands; the first hundred are
	// enough to act on.
	Omitted int
}

// maxReportedProblems is how many problems a ValidationError lists.
const maxReportedProblems = 100

// newValidationError returns the first maxReportedProblems problems, and
// how many more there were.
func newValidationError(ps []Problem) *ValidationError {
	if len(ps) <= maxReportedProblems {
		return &ValidationError{Problems: ps}
	}
	return &ValidationError{Problems: ps[:maxReportedProblems:maxReportedProblems], Omitted: len(ps) - maxReportedProblems}
}

// Total is the number of problems found, listed or not.
func (e *ValidationError) Total() int {
	return len(e.Problems) + e.Omitted
}

// OmittedLine says how many problems are not listed, or is "" when none.
func (e *ValidationError) OmittedLine() string {
	if e.Omitted == 0 {
		return ""
	}
	s := "s"
	if e.Omitted == 1 {
		s = ""
	}
	return fmt.Sprintf("… and %d more problem%s", e.Omitted, s)
}

// Error lists the problems one per line.
func (e *ValidationError) Error() string {
	if len(e.Problems) == 0 {
		return "invalid configuration"
	}
	lines := make([]string, len(e.Problems), len(e.Problems)+1)
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	if l := e.OmittedLine(); l != "" {
		lines = append(lines, l)
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
// Validate parses connection strings with pgxpool.ParseConfig, which like
// libpq also consults PG* environment variables and the files they name.
func (c *Config) Validate() error {
	if ps := c.problems(); len(ps) > 0 {
		return newValidationError(ps)
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

// Limits enforced by Validate. The ranges of numeric keys are the `limit`
// tags of their fields in config.go.
const (
	maxIdentLen = 63 // PostgreSQL's NAMEDATALEN - 1
	// maxNodeIDLen keeps "projectord-coord " + node_id within the 63 bytes
	// of application_name: takeover finds a stalled node's sessions by that
	// name, and PostgreSQL would truncate a longer one.
	maxNodeIDLen = maxIdentLen - len("projectord-coord ")
)

type checker struct {
	problems []Problem
}

func (k *checker) add(path, format string, args ...any) {
	k.problems = append(k.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// limited checks a numeric key against the `limit:"lo,hi"` tag of its
// field, the one place a key's range is written down (decode errors quote
// it too).
func (k *checker) limited(path string, v int64) {
	l, ok := limitAt(path)
	if !ok {
		panic("config: no limit tag for " + path) // a field added without its range
	}
	if v < l.lo || v > l.hi {
		k.add(path, "must be between %s", l)
	}
}

// limit is the range of a numeric key, inclusive.
type limit struct {
	lo, hi   int64
	duration bool
}

// String words the range: "1 and 10000", "1ms and 1m0s".
func (l limit) String() string {
	if l.duration {
		return fmt.Sprintf("%s and %s", time.Duration(l.lo), time.Duration(l.hi))
	}
	return fmt.Sprintf("%d and %d", l.lo, l.hi)
}

// limitAt returns the limit of the field a key path names, such as
// "projectors[3].on_error.initial"; ok is false when the path names no
// field or its field has no limit tag.
func limitAt(path string) (limit, bool) {
	f, ok := fieldAt(path)
	if !ok {
		return limit{}, false
	}
	tag, ok := f.Tag.Lookup("limit")
	if !ok {
		return limit{}, false
	}
	l, err := parseLimit(tag, f.Type == durationType)
	if err != nil {
		panic(fmt.Sprintf("config: bad limit tag on %s: %v", path, err))
	}
	return l, true
}

func parseLimit(tag string, duration bool) (limit, error) {
	lo, hi, ok := strings.Cut(tag, ",")
	if !ok {
		return limit{}, fmt.Errorf("%q is not lo,hi", tag)
	}
	parse := func(s string) (int64, error) {
		if duration {
			d, err := time.ParseDuration(s)
			return int64(d), err
		}
		return strconv.ParseInt(s, 10, 64)
	}
	l := limit{duration: duration}
	var err1, err2 error
	l.lo, err1 = parse(lo)
	l.hi, err2 = parse(hi)
	if err1 != nil || err2 != nil || l.lo > l.hi {
		return limit{}, fmt.Errorf("%q is not lo,hi", tag)
	}
	return l, nil
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

// dsn checks that a connection string parses, without repeating its
// password. It parses as the daemon will, with pgxpool.ParseConfig, so
// pgx's and the pool's own parameters (default_query_exec_mode,
// pool_max_conns, ...) are checked too, and the error names the parameter.
func (k *checker) dsn(path, dsn string) {
	_, err := pgxpool.ParseConfig(dsn)
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
	k.limited("metrics.refresh_interval", int64(c.Metrics.RefreshInterval))
	k.oneOf("log.level", c.Log.Level, logLevels)
	k.oneOf("log.format", c.Log.Format, logFormats)
	k.limited("shutdown_timeout", int64(c.ShutdownTimeout))
	k.limited("defaults.batch_size", int64(c.Defaults.BatchSize))
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
	k.limited("database.max_conns", int64(d.MaxConns))
	k.limited("database.connect_timeout", int64(d.ConnectTimeout))
	k.limited("database.query_timeout", int64(d.QueryTimeout))
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
		optional := name == "event_id" || name == "metadata" || (name == "transaction_id" && s.Ordering == "position")
		// An unknown preset leaves columns empty; that problem is already listed.
		if !optional && knownPreset {
			k.add(path, "is required")
		}
	}
	k.limited("source.poll_interval", int64(s.PollInterval))
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
	if co.NodeID != "" {
		checkNodeID(k, "coordination.node_id", co.NodeID)
	}
	if co.URL != "" {
		k.dsn("coordination.url", co.URL)
	}
	k.limited("coordination.lock_namespace", int64(co.LockNamespace))
	k.limited("coordination.acquire_interval", int64(co.AcquireInterval))
	k.limited("coordination.heartbeat_interval", int64(co.HeartbeatInterval))
	k.limited("coordination.lease_timeout", int64(co.LeaseTimeout))
	if co.HeartbeatInterval > 0 && co.LeaseTimeout > 0 && co.LeaseTimeout <= 2*co.HeartbeatInterval {
		k.add("coordination.lease_timeout", "must be more than twice coordination.heartbeat_interval (%s), so that one late heartbeat does not depose a live leader", 2*co.HeartbeatInterval)
	}
	k.limited("coordination.node_expiry", int64(co.NodeExpiry))
	if co.LeaseTimeout > 0 && co.NodeExpiry > 0 && co.NodeExpiry <= co.LeaseTimeout {
		k.add("coordination.node_expiry", "must be more than coordination.lease_timeout (%s): a node is not even stalled before that, and its row must outlive it", co.LeaseTimeout)
	}
	k.limited("coordination.tcp_user_timeout", int64(co.TCPUserTimeout))
	k.limited("coordination.keepalive_idle", int64(co.KeepaliveIdle))
	k.limited("coordination.keepalive_interval", int64(co.KeepaliveInterval))
	k.limited("coordination.keepalive_count", int64(co.KeepaliveCount))
}

// checkNodeID checks a node id: it is carried in application_name, which
// PostgreSQL truncates to 63 bytes and in which it replaces anything but
// printable ASCII, so a longer or exotic id would no longer find its own
// sessions; and it is printed in logs and status, where a control
// character would forge lines.
func checkNodeID(k *checker, path, id string) {
	ok := len(id) <= maxNodeIDLen && strings.TrimSpace(id) == id
	for i := 0; ok && i < len(id); i++ {
		ok = id[i] >= 0x20 && id[i] <= 0x7e
	}
	if !ok {
		k.add(path, "%q must be 1 to %d printable ASCII characters (no control characters, no leading or trailing space), to fit PostgreSQL's application_name", id, maxNodeIDLen)
	}
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
		k.limited(path+".max_attempts", int64(p.MaxAttempts))
	}
	if all || p.Initial != b.Initial {
		k.limited(path+".initial", int64(p.Initial))
	}
	if all || p.Max != b.Max {
		k.limited(path+".max", int64(p.Max))
	}
	if p.Initial > 0 && p.Max > 0 && p.Initial > p.Max && (all || p.Initial != b.Initial || p.Max != b.Max) {
		k.add(path+".initial", "must not exceed %s.max (%s)", path, p.Max)
	}
	if all || p.Then != b.Then {
		k.oneOf(path+".then", string(p.Then), errorThens)
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
			k.limited(path+".batch_size", int64(eff.BatchSize))
		}
		k.limited(path+".weight", int64(eff.Weight))
		if p.Version != 0 {
			k.limited(path+".version", int64(p.Version))
		}
		if p.Version > 1 && p.Sink.HTTP != nil {
			// A version rebuilds a read model beside the old one and swaps
			// it in (setup, promote, retire): nothing of the sort exists
			// for a receiver, which would get every event again under new
			// ids with no way to tell the versions apart.
			k.add(path+".version", "must be 1 (or unset) for an HTTP sink: versions rebuild SQL read models only; to deliver every event again, use `projectord reset`")
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
	if s.HTTP != nil {
		checkHTTPSink(k, path+".http", s.HTTP)
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
	for _, f := range []struct{ key, sql string }{{"setup", s.SQL.Setup}, {"promote", s.SQL.Promote}, {"retire", s.SQL.Retire}} {
		if strings.TrimSpace(f.sql) == "" {
			continue
		}
		if err := store.CheckVersionSQL(f.sql); err != nil {
			k.add(sp+"."+f.key, "%v", err)
		}
	}
}

// checkHTTPSink checks what can be checked without reading the files
// (they are secrets, read when the daemon starts, so that a rotated file
// is read by the replica that uses it, not by `config validate`).
func checkHTTPSink(k *checker, path string, h *HTTPSink) {
	switch u, err := url.Parse(h.URL); {
	case h.URL == "":
		k.add(path+".url", "is required (an http or https URL)")
	case err != nil:
		k.add(path+".url", "is not a valid URL")
	case u.Scheme != "http" && u.Scheme != "https":
		k.add(path+".url", "must be an http or https URL, not scheme %q", u.Scheme)
	case u.Host == "":
		k.add(path+".url", "has no host")
	}
	if h.Timeout != 0 { // 0 means DefaultHTTPTimeout
		k.limited(path+".timeout", int64(h.Timeout))
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
