package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHTTPSinkLoadsAndPrintsRedacted(t *testing.T) {
	t.Parallel()
	cfg, err := LoadBytes([]byte(`
database:
  url: postgres://app@db:5432/app
projectors:
  - name: search_index
    event_types: [ProductAdded]
    sink:
      http:
        url: https://indexer:hunter2@search.internal/events
        secret_file: /run/secrets/search-webhook
        headers_file: /run/secrets/search-headers
        timeout: 3s
`), nil)
	require.NoError(t, err)
	h := cfg.Projectors[0].Sink.HTTP
	require.NotNil(t, h)
	require.Equal(t, 3*time.Second, h.Timeout)
	require.Equal(t, "/run/secrets/search-webhook", h.SecretFile)
	out, err := cfg.YAML()
	require.NoError(t, err)
	require.NotContains(t, string(out), "hunter2")
	require.Contains(t, string(out), "url: https://indexer:xxxxx@search.internal/events")
	require.Contains(t, string(out), "headers_file: /run/secrets/search-headers")
	require.Contains(t, cfg.Projectors[0].Sink.HTTP.URL, "hunter2", "Redacted is a copy")
	// A printed configuration loads again.
	_, err = LoadBytes(out, nil)
	require.NoError(t, err)
}

func TestHTTPSinkValidation(t *testing.T) {
	t.Parallel()
	for body, want := range map[string]string{
		"{http: {url: ftp://x/y}}":                                     `projectors[0].sink.http.url: must be an http or https URL, not scheme "ftp"`,
		"{http: {timeout: 1s}}":                                        "projectors[0].sink.http.url: is required",
		"{http: {url: 'http://'}}":                                     "projectors[0].sink.http.url: has no host",
		"{http: {url: 'http://h/', timeout: 11m}}":                     "projectors[0].sink.http.timeout: must be between 10ms and 10m0s",
		"{http: {url: 'http://h/'}, sql: {handlers: {'*': SELECT 1}}}": "projectors[0].sink: sets sql and http: set exactly one",
	} {
		_, err := LoadBytes([]byte(`
database:
  url: postgres://app@db:5432/app
projectors:
  - name: p
    sink: `+body+"\n"), nil)
		require.ErrorContains(t, err, want, body)
	}
}
