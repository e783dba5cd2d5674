package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestProjectorWeight: a projector without weight weighs 1; a weight out
// of 1..1000 is refused with its path; coordination.balance is on unless
// turned off.
func TestProjectorWeight(t *testing.T) {
	t.Parallel()
	load := func(weight string) (*Config, error) {
		return LoadBytes([]byte(`
database: {url: "`+testURL+`"}
projectors:
  - {name: a, `+weight+` sink: {sql: {handlers: {A: SELECT 1}}}}
`), nil)
	}
	cfg, err := load("")
	require.NoError(t, err)
	require.Equal(t, 1, cfg.Projectors[0].Weight)
	require.True(t, cfg.Coordination.Balance)
	cfg, err = load("weight: 1000,")
	require.NoError(t, err)
	require.Equal(t, 1000, cfg.Projectors[0].Weight)
	for _, w := range []string{"-1", "1001"} {
		_, err = load("weight: " + w + ",")
		ps := requireProblems(t, err)
		require.Equal(t, []string{"projectors[0].weight"}, paths(ps), w)
		require.Contains(t, ps[0].Message, "between 1 and 1000")
	}
	cfg, err = LoadBytes([]byte(`
database: {url: "`+testURL+`"}
coordination: {balance: false}
`), nil)
	require.NoError(t, err)
	require.False(t, cfg.Coordination.Balance)
}
