package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

func FuzzLoadBytes(f *testing.F) {
	example, err := os.ReadFile("../../configs/example.yaml")
	require.NoError(f, err)
	for _, seed := range []string{
		string(example),
		"",
		"database: {url: " + testURL + "}\n" + validProjector,
		"database: {url: " + testURL + ", max_conns: 0}\nlog: {level: loud}\nprojectors: [{name: a, batchsize: 1}]",
		"database: {url: [",
		"- a\n- b",
		"projectors: [{sink: {sql: {handlers: {OrderPlaced: ~, '': x}}}}]",
		"projectors: {a: b}",
		"projectors: [1, [2], ~, {name: x, event_types: a, on_error: 5}]",
		"database: 5\nsource: [a]\ncoordination: ~\nhttp: {listen: {a: b}}",
		"database: {url: 'postgres://u:secret@h:bad/db'}\nsource: {poll_interval: 1e400, listen: 2}",
		"? [a, b]\n: c\n1: 2\ntrue: false",
		"database: {max_conns: 99999999999999999999, connect_timeout: -1}",
		"source: {columns: {position: 1, transaction_id: !!binary aGVsbG8=}, table: 2001-12-14}",
		"a: &a [*a]",
		"defaults: {on_error: {initial: 1h, max: 1s, then: \"\"}}",
		"Database: {URL: x}\ndatabase: {url: y}",
		"database.url: x\nprojectors.0.name: y",
		"base: &b {batch_size: 5}\nprojectors: [{<<: *b, name: a}, {<<: [*b, {x: 1}], name: b}]",
		"a: &a {<<: *a}",
		billionLaughs,
		string(nestedDoc(MaxConfigDepth)),
		string(nestedDoc(MaxConfigDepth + 1)),
		"a: " + strings.Repeat("[", MaxConfigDepth+1),
		string(unknownKeysDoc(2000)),
		"coordination: {node_id: \"a\\0b\", tcp_user_timeout: 2147484s}\ndatabase: {url: 'postgres://h/d?pool_max_conns=x', query_timeout: 2562047h}",
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		// Every input is bounded by the loader itself: past MaxConfigSize,
		// MaxConfigDepth or maxConfigNodes it is refused, so no input may
		// take long. 2s is generous for a busy machine; the inputs within
		// the bounds take milliseconds.
		start := time.Now()
		cfg, err := LoadBytes(data, nil)
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("loading %d bytes took %s", len(data), took)
		}
		if len(data) > MaxConfigSize {
			require.ErrorIs(t, err, errBounds)
		}
		checkParseMatchesYAMLv3(t, data)
		if err != nil {
			require.Nil(t, cfg)
			requireNonEmptyError(t, err)
		} else {
			require.NoError(t, cfg.Validate(), "Load returned a Config that does not validate")
			out, err := cfg.YAML()
			require.NoError(t, err)
			// What config print shows must load back as the same
			// configuration, unless redaction changed it or it names a
			// url_file (then url is shown as well, which the loader rejects).
			if reflect.DeepEqual(cfg.Redacted(), cfg) && cfg.Database.URLFile == "" {
				again, err := LoadBytes(out, nil)
				require.NoError(t, err, "YAML() output does not load:\n%s", out)
				require.Equal(t, cfg, again)
			}
		}

		// Validate must also cope with whatever a partial decode leaves.
		partial, _, err := decode(data, "fuzz", LoadOptions{Env: envMap(nil)})
		if err != nil {
			return
		}
		partial.applyProjectorDefaults()
		if err := partial.Validate(); err != nil {
			requireNonEmptyError(t, err)
		}
		_ = partial.Redacted()
	})
}

func requireNonEmptyError(t *testing.T, err error) {
	t.Helper()
	require.NotEmpty(t, strings.TrimSpace(err.Error()))
	var ve *ValidationError
	if errors.As(err, &ve) {
		require.NotEmpty(t, ve.Problems)
		for _, p := range ve.Problems {
			require.NotEmpty(t, strings.TrimSpace(p.Message), "problem at %q has no message", p.Path)
		}
	}
}

// checkParseMatchesYAMLv3 checks that the bounded parser means what
// yaml.v3 means: where both accept a document they build the same values,
// and where yaml.v3 refuses one (other than by its own alias limit) so does
// the bounded parser.
func checkParseMatchesYAMLv3(t *testing.T, data []byte) {
	t.Helper()
	got, err := parseYAML(data)
	// yaml.v3 itself is quadratic in the keys of a mapping.
	if errors.Is(err, errBounds) || len(data) > 64<<10 {
		return
	}
	var want any
	werr := yaml.Unmarshal(data, &want)
	if werr != nil {
		if !strings.Contains(werr.Error(), "excessive aliasing") {
			require.Error(t, err, "yaml.v3 refuses this document (%v)", werr)
		}
		return
	}
	switch w := want.(type) {
	case nil:
		if err == nil {
			require.Empty(t, got)
		}
		return
	case map[string]any:
		require.NoError(t, err)
		require.Equal(t, w, got)
	case map[any]any:
		require.NoError(t, err)
		m := make(map[string]any, len(w))
		for k, v := range w {
			m[fmt.Sprint(k)] = v
		}
		require.Equal(t, m, got)
	default:
		require.Error(t, err, "a document that is not a mapping")
	}
}
