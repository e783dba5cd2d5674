package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/pflag"
)

// The key model. The mapstructure tags of Config are the one list of keys:
// the file's sections and keys, the scalar keys' environment variables and
// flags (leaves), their defaults (Default, read through the same leaves),
// the check of a file against the keys (conform), the decoders' field paths
// and the ranges of their messages (limitAt) are all derived from them.

// envPrefix starts the environment variable of every key: database.url is
// read from PROJECTORD_DATABASE_URL.
const envPrefix = "PROJECTORD_"

// EnvConfigFile names the environment variable that points at the config
// file when LoadOptions.File is empty.
const EnvConfigFile = envPrefix + "CONFIG"

// leaf is one scalar key of Config, as every source names it.
type leaf struct {
	key   string // the file's dotted path and the flag's name: "database.url"
	env   string // the environment variable: "PROJECTORD_DATABASE_URL"
	index []int  // the field index path that reaches it in Config
}

// leaves lists every scalar key of Config, in declaration order. Slices,
// maps and pointers (projectors and what they hold) are not leaves: they
// come from the file only.
var leaves = sync.OnceValue(func() []leaf {
	return collectLeaves(reflect.TypeFor[Config](), "", nil)
})

// leafByKey finds a leaf by its key.
var leafByKey = sync.OnceValue(func() map[string]leaf {
	m := map[string]leaf{}
	for _, l := range leaves() {
		m[l.key] = l
	}
	return m
})

func collectLeaves(t reflect.Type, prefix string, index []int) []leaf {
	var out []leaf
	for i := range t.NumField() {
		f := t.Field(i)
		tag := tagName(f)
		if tag == "" {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		idx := append(append([]int(nil), index...), i)
		switch f.Type.Kind() {
		case reflect.Struct:
			out = append(out, collectLeaves(f.Type, key, idx)...)
		case reflect.Slice, reflect.Map, reflect.Pointer, reflect.Array, reflect.Interface:
			// Structured values are read from the file only.
		default:
			out = append(out, leaf{key: key, env: envVar(key), index: idx})
		}
	}
	return out
}

// tagName is the mapstructure key of a field, or "" for unexported or
// explicitly skipped fields.
func tagName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	if name == "-" {
		return ""
	}
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

// isLeafKey reports whether key is a scalar key of Config.
func isLeafKey(key string) bool {
	_, ok := leafByKey()[key]
	return ok
}

// envVar is the environment variable that sets key.
func envVar(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// leafValue returns the value of leaf l in c.
func leafValue(c *Config, l leaf) any {
	return reflect.ValueOf(c).Elem().FieldByIndex(l.index).Interface()
}

// DefineFlag defines on fs the string flag --KEY, which Load binds to the
// key (LoadOptions.Flags). Its help is usage followed by the key's
// environment variable and default: "log level: debug, info, warn, error
// ($PROJECTORD_LOG_LEVEL; default info)". It panics when key is not a
// scalar key: that is a mistake in the program, not in its input.
func DefineFlag(fs *pflag.FlagSet, key, usage string) {
	l, ok := leafByKey()[key]
	if !ok {
		panic(fmt.Sprintf("config: DefineFlag: %q is not a config key", key))
	}
	def := Default()
	help := "$" + l.env
	if v := leafValue(&def, l); v != "" {
		help += fmt.Sprintf("; default %v", v)
	}
	fs.String(key, "", usage+" ("+help+")")
}

// fields lists the fields of a struct type by key, and the keys in
// declaration order.
type fields struct {
	byKey map[string]reflect.StructField
	keys  []string
}

var fieldsCache sync.Map // reflect.Type -> *fields

func fieldsOf(t reflect.Type) *fields {
	if f, ok := fieldsCache.Load(t); ok {
		return f.(*fields)
	}
	f := &fields{byKey: map[string]reflect.StructField{}}
	for i := range t.NumField() {
		if name := tagName(t.Field(i)); name != "" {
			f.byKey[name] = t.Field(i)
			f.keys = append(f.keys, name)
		}
	}
	fieldsCache.Store(t, f)
	return f
}

// structAt returns the struct type at a decode path ("" is Config), or nil
// when the path does not lead to a struct.
func structAt(path string) reflect.Type {
	t := reflect.TypeFor[Config]()
	if path != "" {
		for seg := range strings.SplitSeq(path, ".") {
			name, _, _ := strings.Cut(seg, "[")
			if t = deref(t); t.Kind() != reflect.Struct {
				return nil
			}
			f, ok := fieldsOf(t).byKey[strings.ToLower(name)]
			if !ok {
				return nil
			}
			t = f.Type
			// Each [i] or [key] steps into a slice or map element.
			for range strings.Count(seg, "[") {
				t = deref(t)
				switch t.Kind() {
				case reflect.Slice, reflect.Array, reflect.Map:
					t = t.Elem()
				default:
					return nil
				}
			}
		}
	}
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

// fieldAt returns the struct field a decode path names, such as
// "projectors[0].on_error.max" or "database.max_conns".
func fieldAt(path string) (reflect.StructField, bool) {
	parent, name := "", path
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		parent, name = path[:i], path[i+1:]
	}
	t := structAt(parent)
	if t == nil {
		return reflect.StructField{}, false
	}
	f, ok := fieldsOf(t).byKey[strings.ToLower(name)]
	return f, ok
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

// conform checks a value of the file against the type t its path holds in
// Config, before any decoder sees it, and returns it in the form the
// decoders expect: maps with string keys, strings in place of exotic
// scalars such as timestamps, and every mapping that stands for a struct
// keyed by exactly its fields' keys. t nil means any value.
//
// The same rules hold for every such mapping, projectors included: a key
// the struct has no field for is reported (with a suggestion) and dropped,
// and so is a key holding the "." that viper reads as a path separator,
// and a key differing from another only in case (keys match their field
// ignoring case, as viper's do); a null value means "not set", like an
// absent key. Outside projectors (checkNulls false) a null value is
// dropped before any check, whatever its key: a section whose keys are all
// commented out loads, even under a misspelt name. A value of the wrong
// kind is left for the decoder to report with the field's own range. Paths
// name known keys as declared and the offending key as written.
//
// Unknown keys must never reach viper: it merges a map with a
// case-insensitive scan of all its keys per key (quadratic: 10,000 unknown
// keys took 30 s). Work here is linear in the size of the document.
func conform(v any, t reflect.Type, path string, sug *suggester, checkNulls bool) (any, []Problem) {
	if t != nil {
		t = deref(t)
	}
	var problems []Problem
	switch val := v.(type) {
	case nil, bool, int, int64, uint64, float64, string:
		return v, nil
	case map[any]any:
		m := make(map[string]any, len(val))
		for k, e := range val {
			sk := fmt.Sprint(k)
			if _, dup := m[sk]; dup {
				problems = append(problems, Problem{Path: joinPath(path, sk), Message: "is set more than once"})
			}
			m[sk] = e
		}
		out, ps := conform(m, t, path, sug, checkNulls)
		return out, append(problems, ps...)
	case map[string]any:
		if t != nil && t.Kind() == reflect.Struct {
			return conformStruct(val, t, path, sug, checkNulls)
		}
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		m := make(map[string]any, len(val))
		for _, k := range sortedKeys(val) {
			e, ps := conform(val[k], elem, joinPath(path, k), sug, checkNulls)
			problems = append(problems, ps...)
			m[k] = e
		}
		return m, problems
	case []any:
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		s := make([]any, len(val))
		for i, e := range val {
			var ps []Problem
			s[i], ps = conform(e, elem, fmt.Sprintf("%s[%d]", path, i), sug, checkNulls)
			problems = append(problems, ps...)
		}
		return s, problems
	default:
		// Timestamps and other explicitly tagged scalars.
		return fmt.Sprint(v), nil
	}
}

func conformStruct(m map[string]any, t reflect.Type, path string, sug *suggester, checkNulls bool) (any, []Problem) {
	fs := fieldsOf(t)
	out := make(map[string]any, len(m))
	seen := make(map[string]bool, len(m))
	var problems []Problem
	for _, k := range sortedKeys(m) {
		if m[k] == nil && !checkNulls {
			continue
		}
		key := strings.ToLower(k)
		f, known := fs.byKey[key]
		var msg string
		switch {
		case strings.Contains(k, "."):
			msg = "unknown key (nest keys instead of joining them with \".\")"
		case seen[key]:
			msg = "is set more than once (keys are not case-sensitive)"
		case !known:
			msg = sug.unknownKey(k, fs.keys)
		}
		seen[key] = true
		if msg != "" {
			problems = append(problems, Problem{Path: joinPath(path, k), Message: msg})
			continue
		}
		if m[k] == nil {
			continue // null means not set
		}
		val, ps := conform(m[k], f.Type, joinPath(path, key), sug, checkNulls || (path == "" && key == projectorsKey))
		problems = append(problems, ps...)
		out[key] = val
	}
	return out, problems
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// maxSuggestions bounds how many unknown keys get a "did you mean": only
// the first problems are shown (see maxReportedProblems), and each
// suggestion costs an edit distance against every key of its struct.
const maxSuggestions = maxReportedProblems

// suggester words "unknown key" problems, suggesting a known key for the
// first maxSuggestions of them.
type suggester struct{ left int }

func (s *suggester) unknownKey(key string, known []string) string {
	msg := "unknown key"
	if s.left <= 0 {
		return msg
	}
	s.left--
	if k := suggestKey(key, known); k != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", k)
	}
	return msg
}

var keyNormalizer = strings.NewReplacer("_", "", "-", "")

// suggestKey returns the known key an unknown key was most likely meant to
// be ("batchsize" -> "batch_size"), or "" when none is close. Its cost is
// bounded by the known keys' lengths, however long the unknown key.
func suggestKey(unknown string, known []string) string {
	const maxDist = 2
	if len(unknown) > 64 {
		return "" // no known key is anywhere near that long
	}
	lower := strings.ToLower(unknown)
	norm := keyNormalizer.Replace(lower)
	best, bestDist := "", maxDist+1
	for _, k := range known {
		if keyNormalizer.Replace(k) == norm || strings.HasPrefix(k, lower+"_") {
			return k
		}
		// The length difference is a lower bound of the edit distance.
		if d := len(lower) - len(k); d >= bestDist || -d >= bestDist {
			continue
		}
		if d := editDistance(lower, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
