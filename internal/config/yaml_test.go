package config

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// TestParseYAMLMatchesYAMLv3 checks that the bounded parser builds what
// yaml.v3 itself decodes into `any`, so bounding the loader changed no
// document's meaning.
func TestParseYAMLMatchesYAMLv3(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		"",
		"# only a comment\n",
		"a: 1\nb: [x, 2, 3.5, true, ~, null]\nc: {d: {e: f}}\n",
		"a: '1'\nb: \"multi\\nline\"\nc: |\n  block\n  text\n",
		"a: 2001-12-14\nb: !!binary aGVsbG8=\nc: 0x1F\nd: 1e3\ne: .inf\nf: !!str 5\n",
		"1: a\ntrue: b\n~: c\n2.5: d\n",
		"base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\n",
		"a: &a {x: 1}\nb: &b {x: 2, z: 2}\nc: {<<: [*a, *b], w: 0}\n",
		"a: &a {x: 1, <<: {q: 9}}\nc: {<<: *a}\n",
		"list: &l [1, 2]\nagain: *l\nkey: &k name\n*k : v\n",
		"projectors:\n  - &p {name: a, sink: {sql: {handlers: {A: SELECT 1}}}}\n  - {<<: *p, name: b}\n",
		"a: {<<: {x: 1}, x: 2}\n",
		"? a\n: b\n",
	} {
		var want any
		require.NoError(t, yaml.Unmarshal([]byte(doc), &want), doc)
		got, err := parseYAML([]byte(doc))
		require.NoError(t, err, doc)
		if want == nil {
			require.Empty(t, got, doc)
			continue
		}
		if wm, ok := want.(map[any]any); ok {
			sm := map[string]any{}
			for k, v := range wm {
				sm[fmt.Sprint(k)] = v
			}
			want = sm
		}
		require.Equal(t, want, any(got), doc)
	}
}

// TestParseYAMLRefusesWhatYAMLv3Refuses checks documents yaml.v3 rejects
// on decoding; the bounded parser must reject them too.
func TestParseYAMLRefusesWhatYAMLv3Refuses(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{
		"a: 1\na: 2\n",
		"a: &a [*a]\n",
		"a: &a {b: *a}\n",
		"? [a, b]\n: c\n",
		"a: {<<: 5}\n",
		"a: {<<: [{x: 1}, 2]}\n",
		"a: *nowhere\n",
		"a: [\n",
	} {
		var want any
		require.Error(t, yaml.Unmarshal([]byte(doc), &want), doc)
		_, err := parseYAML([]byte(doc))
		require.Error(t, err, doc)
	}
}
