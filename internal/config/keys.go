package config

import (
	"reflect"
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
	var keys []string
	for i := range t.NumField() {
		if name := tagName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
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

// suggestKey returns the known key an unknown key was most likely meant to
// be ("batchsize" -> "batch_size"), or "" when none is close.
func suggestKey(unknown string, known []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", 3
	for _, k := range known {
		if norm(k) == norm(unknown) || strings.HasPrefix(k, strings.ToLower(unknown)+"_") {
			return k
		}
		if len(unknown) > 2*len(k) {
			continue
		}
		if d := editDistance(strings.ToLower(unknown), k); d < bestDist {
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
