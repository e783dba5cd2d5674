package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// coordination.node_expiry: 1h by default, 1m to 720h, set by file, flag or
// environment, and always more than lease_timeout.
func TestNodeExpiry(t *testing.T) {
	t.Parallel()
	base := "database: {url: \"" + testURL + "\"}\n" + validProjector

	cfg, err := LoadBytes([]byte(base), nil)
	require.NoError(t, err)
	require.Equal(t, time.Hour, cfg.Coordination.NodeExpiry)

	cfg, err = LoadBytes([]byte(base+"coordination: {node_expiry: 2h}\n"), nil)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, cfg.Coordination.NodeExpiry)

	cfg, err = LoadBytes([]byte(base+"coordination: {node_expiry: 2h}\n"),
		envMap(map[string]string{"PROJECTORD_COORDINATION_NODE_EXPIRY": "90m"}))
	require.NoError(t, err)
	require.Equal(t, 90*time.Minute, cfg.Coordination.NodeExpiry, "the environment wins over the file")

	for _, tc := range []struct{ yaml, msg string }{
		{"coordination: {node_expiry: 59s}\n", "coordination.node_expiry: must be between 1m0s and 336h0m0s"},
		{"coordination: {node_expiry: 337h}\n", "coordination.node_expiry: must be between 1m0s and 336h0m0s"},
		{"coordination: {node_expiry: 1m, lease_timeout: 1m}\n", "coordination.node_expiry: must be more than coordination.lease_timeout (1m0s)"},
		{"coordination: {node_expiry: 5m, lease_timeout: 10m}\n", "coordination.node_expiry: must be more than coordination.lease_timeout (10m0s)"},
	} {
		_, err := LoadBytes([]byte(base+tc.yaml), nil)
		ps := requireProblems(t, err)
		require.Equal(t, []string{"coordination.node_expiry"}, paths(ps), tc.yaml)
		require.Contains(t, err.Error(), tc.msg)
	}
	cfg, err = LoadBytes([]byte(base+"coordination: {node_expiry: 61s, lease_timeout: 1m}\n"), nil)
	require.NoError(t, err, "just above lease_timeout")
	require.Equal(t, 61*time.Second, cfg.Coordination.NodeExpiry)
}
