package main

import (
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
)

// loadDevConfig parses args as dev's command line and loads its
// configuration, as `projectord dev` does before it starts anything.
func loadDevConfig(t *testing.T, o devOptions, args ...string) (*config.Config, error) {
	t.Helper()
	root := newRootCmd(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	dev, _, err := root.Find([]string{"dev"})
	require.NoError(t, err)
	require.NoError(t, dev.ParseFlags(args))
	return devConfig(dev.Flags(), o)
}

// TestDevConfigTakesFlagsAsFlags checks that dev's flags reach its
// configuration as flags and overrides, and the real environment not at
// all. On the original code dev passed its flags as a made-up environment,
// where an empty value means unset: `dev --log.level ""` silently kept the
// level of configs/dev.yaml, where every other command refuses it.
func TestDevConfigTakesFlagsAsFlags(t *testing.T) {
	t.Setenv("PROJECTORD_LOG_LEVEL", "loud")
	t.Setenv("PROJECTORD_DATABASE_URL", "postgres://env@h/db")
	t.Setenv("PROJECTORD_SOURCE_LISTEN", "true")

	cfg, err := loadDevConfig(t, devOptions{})
	require.NoError(t, err, "the environment is not read")
	require.Equal(t, "info", cfg.Log.Level)
	require.Equal(t, "postgres://postgres@127.0.0.1:5432/demo?sslmode=disable", cfg.Database.URL)
	require.False(t, cfg.Source.Listen)
	require.Equal(t, ":7464", cfg.HTTP.Listen)
	require.Len(t, cfg.Projectors, 3)

	cfg, err = loadDevConfig(t, devOptions{databaseURL: "postgres://flag@h/db", notify: true},
		"--http.listen", "", "--log.format", "json", "--log.level", "debug")
	require.NoError(t, err)
	require.Equal(t, "postgres://flag@h/db", cfg.Database.URL)
	require.True(t, cfg.Source.Listen, "--notify sets source.listen")
	require.Empty(t, cfg.HTTP.Listen, `--http.listen "" disables the server`)
	require.Equal(t, "json", cfg.Log.Format)
	require.Equal(t, "debug", cfg.Log.Level)

	for _, key := range []string{"log.level", "log.format"} {
		_, err = loadDevConfig(t, devOptions{}, "--"+key, "")
		var ve *config.ValidationError
		require.ErrorAs(t, err, &ve, "--%s \"\" is a value, refused as in every command", key)
		require.Equal(t, key, ve.Problems[0].Path)
	}
}
