package main

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/pgtest"
)

// `dead-letters retry` refuses an HTTP projector (exit 2) with a message
// saying why, before it requests anything: its leader retries dead letters
// through an SQL sink only.
func TestHTTPSinkDeadLetterRetryIsRefused(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
http: {listen: ""}
projectors:
  - name: hooks
    sink: {http: {url: 'http://127.0.0.1:1/events'}}
`, url))
	code, _, stderr := cli(t, "dead-letters", "retry", "hooks", "--all", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "hooks has an HTTP sink: dead-letters retry works for SQL sinks only")
}
