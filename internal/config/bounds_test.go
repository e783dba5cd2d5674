package config

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// numericKeys lists every int and duration key, with projector keys under
// projectors[0], by walking the types, so that a new numeric field cannot
// escape the range check.
func numericKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name := tagName(f)
		if name == "" {
			continue
		}
		key := joinPath(prefix, name)
		ft := deref(f.Type)
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, numericKeys(ft, key)...)
		case ft.Kind() == reflect.Slice && deref(ft.Elem()).Kind() == reflect.Struct:
			out = append(out, numericKeys(deref(ft.Elem()), key+"[0]")...)
		case ft.Kind() >= reflect.Int && ft.Kind() <= reflect.Int64:
			out = append(out, key)
		}
	}
	return out
}

// setKey sets the numeric field at a key path of c.
func setKey(t *testing.T, c *Config, key string, v int64) {
	t.Helper()
	rv := reflect.ValueOf(c).Elem()
	for seg := range strings.SplitSeq(key, ".") {
		name, idx, indexed := strings.Cut(seg, "[")
		rv = rv.FieldByNameFunc(func(n string) bool {
			f, _ := rv.Type().FieldByName(n)
			return tagName(f) == name
		})
		require.True(t, rv.IsValid(), key)
		if rv.Kind() == reflect.Pointer {
			if rv.IsNil() {
				rv.Set(reflect.New(rv.Type().Elem()))
			}
			rv = rv.Elem()
		}
		if indexed {
			require.Equal(t, "0]", idx)
			rv = rv.Index(0)
		}
	}
	rv.SetInt(v)
}

// TestEveryNumericKeyHasASaneRange checks that every int and duration key
// has a range that Validate enforces, that no duration can spin a core
// (at least 1ms) or overflow a deadline or PostgreSQL's millisecond
// settings (at most INT_MAX ms), and that values just outside are refused
// with the key's path. On the original code query_timeout: 2562047h
// overflowed a deadline and 1ns intervals were accepted.
func TestEveryNumericKeyHasASaneRange(t *testing.T) {
	t.Parallel()
	keys := numericKeys(reflect.TypeFor[Config](), "")
	require.Contains(t, keys, "database.query_timeout")
	require.Contains(t, keys, "projectors[0].on_error.initial")
	for _, key := range keys {
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			l, ok := limitAt(key)
			require.True(t, ok, "%s has no limit tag", key)
			f, _ := fieldAt(key)
			if f.Type == durationType {
				require.GreaterOrEqual(t, l.lo, int64(time.Millisecond), "%s: a shorter interval spins a core", key)
				require.LessOrEqual(t, l.hi, int64(math.MaxInt32)*int64(time.Millisecond), "%s: beyond PostgreSQL's INT_MAX milliseconds", key)
			} else {
				require.False(t, reflect.Zero(f.Type).OverflowInt(l.lo) || reflect.Zero(f.Type).OverflowInt(l.hi), "%s: range beyond its type", key)
			}
			for _, v := range []int64{l.lo - 1, l.hi + 1} {
				if reflect.Zero(f.Type).OverflowInt(v) {
					continue // the decoder refuses it already
				}
				if v == 0 && strings.HasPrefix(key, "projectors[") {
					continue // a projector's 0 means "as in defaults"
				}
				c := validConfig()
				setKey(t, c, key, v)
				var msgs []string
				for _, p := range requireProblems(t, c.Validate()) {
					if p.Path == key {
						msgs = append(msgs, p.Message)
					}
				}
				require.Contains(t, msgs, "must be between "+l.String(), "%s = %d", key, v)
			}
		})
	}

	// The values that looped forever, from the issue.
	for key, v := range map[string]time.Duration{
		"database.query_timeout":          2562047 * time.Hour,
		"coordination.tcp_user_timeout":   (math.MaxInt32 + 1) * time.Millisecond,
		"coordination.heartbeat_interval": time.Nanosecond,
		"coordination.acquire_interval":   time.Nanosecond,
		"source.poll_interval":            time.Nanosecond,
		"metrics.refresh_interval":        time.Nanosecond,
	} {
		c := validConfig()
		setKey(t, c, key, int64(v))
		require.Contains(t, paths(requireProblems(t, c.Validate())), key, "%s: %s", key, v)
	}
}

// TestValidateNodeID checks that a node id is printable ASCII short enough
// for application_name. On the original code any string passed.
func TestValidateNodeID(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"web-1", "host.example-123-beef", "a b", strings.Repeat("n", maxNodeIDLen)} {
		c := validConfig()
		c.Coordination.NodeID = id
		require.NoError(t, c.Validate(), "%q", id)
	}
	for _, id := range []string{"a\x00b", "tab\there", "line\nbreak", "esc\x1b[31m", "ümlaut", " padded", strings.Repeat("n", maxNodeIDLen+1)} {
		c := validConfig()
		c.Coordination.NodeID = id
		ps := requireProblems(t, c.Validate())
		require.Equal(t, []string{"coordination.node_id"}, paths(ps), "%q", id)
		require.Contains(t, ps[0].Message, "printable ASCII")
		require.NotContains(t, ps[0].String(), "\x00", "the problem line itself stays printable")
	}
	c := validConfig()
	c.Coordination.NodeID = DefaultNodeID()
	require.NoError(t, c.Validate(), "the default node id %q", c.Coordination.NodeID)
}

// TestValidateParsesDSNsLikeThePool checks that pgx's and the pool's own URL
// parameters are parsed at validation time, named, and the password kept
// out. On the original code pool_max_conns=x passed validation.
func TestValidateParsesDSNsLikeThePool(t *testing.T) {
	t.Parallel()
	for param, set := range map[string]func(*Config, string){
		"pool_max_conns":          func(c *Config, u string) { c.Database.URL = u },
		"default_query_exec_mode": func(c *Config, u string) { c.Coordination.URL = u },
		"statement_cache_capacity": func(c *Config, u string) {
			c.Projectors[0].Sink.SQL.TargetURL = u
		},
	} {
		c := validConfig()
		set(c, "postgres://app:hunter2-pw@localhost/app?"+param+"=x")
		err := c.Validate()
		ps := requireProblems(t, err)
		require.Len(t, ps, 1, "%v", ps)
		require.Contains(t, ps[0].Message, param)
		require.NotContains(t, err.Error(), "hunter2")
	}
}

// TestLoadURLFileMustBeARegularFile checks that a FIFO (or a directory) as
// url_file is refused at once. On the original code Load blocked forever
// opening the FIFO.
func TestLoadURLFileMustBeARegularFile(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "url.fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))

	for name, tc := range map[string]struct{ path, message string }{
		"fifo":      {fifo, "named pipe"},
		"directory": {t.TempDir(), "directory"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			done := make(chan error, 1)
			go func() {
				_, err := LoadBytes([]byte("database: {url_file: '"+tc.path+"'}"), nil)
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				// Unblock the stuck open so the goroutine can end.
				if w, oerr := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); oerr == nil {
					w.Close()
				}
				t.Fatalf("Load blocked on a %s as url_file", name)
			}
			ps := requireProblems(t, err)
			require.Equal(t, []string{"database.url_file"}, paths(ps))
			require.Contains(t, ps[0].Message, tc.message)
			require.Contains(t, ps[0].Message, "must be a regular file")
		})
	}
}

// TestLoadURLFileWarnsWhenOthersCanRead checks the warning for a url_file
// readable by its group or others, and its absence for an owner-only file.
func TestLoadURLFileWarnsWhenOthersCanRead(t *testing.T) {
	t.Parallel()
	f := writeFile(t, "url", testURL)
	cfg, err := LoadBytes([]byte("database: {url_file: '"+f+"'}"), nil)
	require.NoError(t, err)
	require.Empty(t, cfg.Warnings(), "mode 0600 is fine")

	for mode, who := range map[os.FileMode]string{0o640: "its group", 0o604: "others", 0o644: "its group and others"} {
		require.NoError(t, os.Chmod(f, mode))
		cfg, err := LoadBytes([]byte("database: {url_file: '"+f+"'}"), nil)
		require.NoError(t, err, "a readable url_file is a warning, not an error")
		w := cfg.Warnings()
		require.Len(t, w, 1)
		require.Contains(t, w[0], "database.url_file: "+f)
		require.Contains(t, w[0], "readable by "+who+" (mode "+fmt.Sprintf("%04o", mode))
		require.NotContains(t, w[0], "pw@", "the warning never shows the URL")
	}
}

// TestLoadRefusesOversizedInput checks the size, depth and alias bounds:
// each is a plain error (exit 2) naming the bound. On the original code a
// 2,000-deep document took 17 s and then loaded.
func TestLoadRefusesOversizedInput(t *testing.T) {
	t.Parallel()

	_, err := LoadBytes(nestedDoc(MaxConfigDepth), nil)
	require.Equal(t, []string{"a"}, paths(requireProblems(t, err)), "the deepest document accepted loads")

	for name, doc := range map[string][]byte{
		"too deep":       nestedDoc(MaxConfigDepth + 1),
		"far too deep":   nestedDoc(2000),
		"deep list":      []byte("a: " + strings.Repeat("[", 100) + strings.Repeat("]", 100)),
		"too large":      append([]byte("database: {url: "+testURL+"}\n#"), make([]byte, MaxConfigSize)...),
		"billion laughs": []byte(billionLaughs),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadBytes(doc, nil)
			require.Nil(t, cfg)
			require.Error(t, err)
			var ve *ValidationError
			require.NotErrorAs(t, err, &ve, "a bound is an error about the file, not a list of problems")
			require.ErrorIs(t, err, errBounds)
		})
	}

	path := writeFile(t, "big.yaml", "#"+strings.Repeat(" ", MaxConfigSize))
	_, err = Load(LoadOptions{File: path, LookPaths: []string{}, Env: envMap(nil)})
	require.ErrorContains(t, err, "larger than 1048576 bytes")
}

// billionLaughs expands to 10^9 values from a few hundred bytes.
const billionLaughs = `
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
`

// TestLoadReportsTheFirstHundredProblems checks the cap on reported
// problems, and that suggestions still come for the ones shown. On the
// original code all 1,000 were listed (and 15,000 took 21.7 s).
func TestLoadReportsTheFirstHundredProblems(t *testing.T) {
	t.Parallel()
	_, err := LoadBytes(append(unknownKeysDoc(1000), "databse: {}\nprojectors: [{name: a, batchsize: 1}]\n"...), nil)
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	require.Len(t, ve.Problems, 100)
	lines := strings.Split(err.Error(), "\n")
	require.Len(t, lines, 101)
	require.Equal(t, "… and 903 more problems", lines[100])
	require.Contains(t, err.Error(), `databse: unknown key (did you mean "database"?)`)

	_, err = LoadBytes([]byte("databse: {}\nprojectors: [{name: a, batchsize: 1}]\n"), nil)
	require.Contains(t, err.Error(), `projectors[0].batchsize: unknown key (did you mean "batch_size"?)`)
}

// TestSuggestKeyIsBounded checks that a suggestion costs no more for a huge
// key than for a short one: only keys near a known key's length are
// compared.
func TestSuggestKeyIsBounded(t *testing.T) {
	t.Parallel()
	known := fieldsOf(reflect.TypeFor[Coordination]()).keys
	require.Equal(t, "lease_timeout", suggestKey("leasetimeout", known))
	require.Equal(t, "lease_timeout", suggestKey("lease_timout", known))
	require.Empty(t, suggestKey(strings.Repeat("x", 1<<20), known))
	require.Empty(t, suggestKey("zzzzzzzzzzzz", known))
}

// TestDecodeErrorsNameTheFieldRange checks that a value of the wrong kind
// is answered with the key's own range, not its Go type's. On the original
// code `batch_size: abc` named the range of an int64.
func TestDecodeErrorsNameTheFieldRange(t *testing.T) {
	t.Parallel()
	_, err := LoadBytes([]byte(`
database: {url: `+testURL+`, max_conns: 4294967304}
defaults: {batch_size: abc}
source: {poll_interval: 50}
coordination: {lock_namespace: x}
projectors:
  - {name: a, batch_size: true, on_error: {max_attempts: 1.5}, sink: {sql: {handlers: {A: SELECT 1}}}}
`), nil)
	msg := err.Error()
	for _, want := range []string{
		"defaults.batch_size: must be a whole number between 1 and 10000\n",
		"database.max_conns: must be a whole number between 1 and 1000\n",
		"projectors[0].batch_size: must be a whole number between 1 and 10000, not true or false",
		"projectors[0].on_error.max_attempts: must be a whole number between 1 and 100",
		"coordination.lock_namespace: must be a whole number between -2147483648 and 2147483647",
		`source.poll_interval: must be a duration such as "50ms", "5s" or "1m", between 5ms and 1m0s: a bare number has no unit`,
	} {
		require.Contains(t, msg+"\n", want)
	}
}
