package main

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReviewStatusCommandLagCountsOnlyHandledEvents: `projectord status`
// reports the lag /status and /metrics report, on the same events: those
// a handler of the projector acts on (before, it counted every event its
// filter let through, so a projector passing over a busy source's other
// types, or halted ahead of them, showed them as lag there alone).
func TestReviewStatusCommandLagCountsOnlyHandledEvents(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 5) // type A
	_, err := ob.pool.Exec(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		SELECT 'b-' || g, 1, 'B', '{}' FROM generate_series(1, 7) g`)
	require.NoError(t, err)
	f := writeFile(t, "s.yaml", fmt.Sprintf(`database: {url: '%s'}
projectors:
  - name: only_a
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES ('only_a', @position)"}}}
`, ob.url))
	code, _, stderr := cli(t, "migrate", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	code, out, stderr := cli(t, "status", "-o", "json", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	var snap statusDoc
	require.NoError(t, json.Unmarshal([]byte(out), &snap))
	require.Len(t, snap.Projectors, 1)
	require.Equal(t, int64(5), snap.Projectors[0].LagEvents, "the A events, not the B ones it has no handler for")
}
