package config

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// allKeys lists every key of Config as the file spells it, projectors'
// keys included ("projectors[].sink.http.url"); maps and lists of scalars
// are keys themselves ("projectors[].sink.sql.handlers").
func allKeys(t reflect.Type, prefix string) []string {
	var out []string
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
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != durationType:
			out = append(out, allKeys(ft, key)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, allKeys(ft.Elem(), key+"[]")...)
		default:
			out = append(out, key)
		}
	}
	return out
}

// documented reports whether the configuration table names key: as
// itself, or in a row that names a sibling and then the key's rest
// ("`defaults.on_error.initial`, `max`"; "`projectors[].batch_size`,
// `on_error.*`").
func documented(rows []string, key string) bool {
	for _, row := range rows {
		if strings.Contains(row, "`"+key+"`") {
			return true
		}
		for i := range len(key) {
			if key[i] != '.' {
				continue
			}
			parent, rest := key[:i+1], key[i+1:]
			if !strings.Contains(row, "| `"+parent) {
				continue
			}
			first, _, _ := strings.Cut(rest, ".")
			if strings.Contains(row, "`"+rest+"`") || strings.Contains(row, "`"+first+".*`") {
				return true
			}
		}
	}
	return false
}

func TestReadmeDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	lines := strings.Split(string(data), "\n")
	start := slices.Index(lines, "## Configuration")
	require.GreaterOrEqual(t, start, 0)
	var rows []string
	for _, l := range lines[start+1:] {
		if strings.HasPrefix(l, "## ") {
			break
		}
		if strings.HasPrefix(l, "| `") {
			rows = append(rows, l)
		}
	}
	keys := allKeys(reflect.TypeFor[Config](), "")
	require.Contains(t, keys, "projectors[].sink.http.secret_file", "the walk must reach the projectors' keys")
	for _, k := range keys {
		assert.True(t, documented(rows, k), "README.md's configuration table does not document %s", k)
	}
}

// yamlKeys lists the keys of a YAML document as allKeys spells them.
func yamlKeys(n *yaml.Node, prefix string, into map[string]bool) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			yamlKeys(c, prefix, into)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			if prefix != "" {
				key = prefix + "." + key
			}
			into[key] = true
			yamlKeys(n.Content[i+1], key, into)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if c.Kind == yaml.MappingNode {
				yamlKeys(c, prefix+"[]", into)
			}
		}
	}
}

func TestExampleConfigShowsEveryKey(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../configs/example.yaml")
	require.NoError(t, err)
	var doc yaml.Node
	require.NoError(t, yaml.Unmarshal(data, &doc))
	have := map[string]bool{}
	yamlKeys(&doc, "", have)
	for _, k := range allKeys(reflect.TypeFor[Config](), "") {
		if k == "database.url_file" {
			continue // exclusive with database.url, which the example sets; shown commented out
		}
		assert.True(t, have[k], "configs/example.yaml does not show %s", k)
	}
	// The example must also load: a key shown there is a key that exists.
	_, err = LoadBytes(data, NoEnv)
	require.NoError(t, err)
}
