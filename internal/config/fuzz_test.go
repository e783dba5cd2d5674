package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
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
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := LoadBytes(data, nil)
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
		partial, _, err := decode(loadInput{data: data, name: "fuzz", env: envMap(nil)})
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
