package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// EnvPrefix starts the environment variable of every key: database.url is
// read from PROJECTORD_DATABASE_URL.
const EnvPrefix = "PROJECTORD_"

// EnvConfigFile names the environment variable that points at the config
// file when LoadOptions.File is empty.
const EnvConfigFile = EnvPrefix + "CONFIG"

// leaf is one scalar key of Config: its dotted mapstructure key and the
// field index path that reaches it.
type leaf struct {
	key   string
	index []int
}

// leaves lists every scalar key of Config, derived from the mapstructure
// tags so that no key can be forgotten when binding environment variables,
// flags and defaults. Slices, maps and pointers (projectors and what they
// hold) are not leaves: they come from the file only.
var leaves = sync.OnceValue(func() []leaf {
	return collectLeaves(reflect.TypeFor[Config](), "", nil)
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
			out = append(out, leaf{key: key, index: idx})
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
	for _, l := range leaves() {
		if l.key == key {
			return true
		}
	}
	return false
}

// envVar is the environment variable that sets key.
func envVar(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// leafValue returns the value of leaf l in c.
func leafValue(c *Config, l leaf) any {
	return reflect.ValueOf(c).Elem().FieldByIndex(l.index).Interface()
}

// structKeysAt returns the keys the struct at a decode path accepts, such
// as "projectors[0].sink", or nil when the path does not lead to a struct.
func structKeysAt(path string) []string {
	t := structAt(path)
	if t == nil {
		return nil
	}
	var keys []string
	for i := range t.NumField() {
		if name := tagName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

// structAt returns the struct type at a decode path ("" is Config), or nil
// when the path does not lead to a struct.
func structAt(path string) reflect.Type {
	t := reflect.TypeFor[Config]()
	if path != "" {
		for seg := range strings.SplitSeq(path, ".") {
			name, _, _ := strings.Cut(seg, "[")
			t = fieldType(t, name)
			if t == nil {
				return nil
			}
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
	for i := range t.NumField() {
		if f := t.Field(i); strings.EqualFold(tagName(f), name) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func fieldType(t reflect.Type, name string) reflect.Type {
	t = deref(t)
	if t.Kind() != reflect.Struct {
		return nil
	}
	for i := range t.NumField() {
		if f := t.Field(i); strings.EqualFold(tagName(f), name) {
			return f.Type
		}
	}
	return nil
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
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

// pruneUnknown deletes from m every key that struct type t has no field
// for, reporting each, and does the same in the mappings below. viper
// merges a map with a case-insensitive scan of all its keys per key
// (quadratic: 10,000 unknown keys took 30 s), so it must only ever see
// known keys. Keys match their field ignoring case, as viper's do.
func pruneUnknown(m map[string]any, t reflect.Type, path string, sug *suggester) []Problem {
	fields := map[string]reflect.Type{}
	var known []string
	for i := range t.NumField() {
		if name := tagName(t.Field(i)); name != "" {
			fields[name] = t.Field(i).Type
			known = append(known, name)
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var problems []Problem
	for _, k := range keys {
		p := joinPath(path, k)
		ft, ok := fields[strings.ToLower(k)]
		if !ok {
			problems = append(problems, Problem{Path: p, Message: sug.unknownKey(k, known)})
			delete(m, k)
			continue
		}
		if sub, isMap := m[k].(map[string]any); isMap && deref(ft).Kind() == reflect.Struct {
			problems = append(problems, pruneUnknown(sub, deref(ft), p, sug)...)
		}
	}
	return problems
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
