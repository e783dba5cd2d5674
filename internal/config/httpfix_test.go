package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// An HTTP projector cannot have a version above 1 (versions rebuild SQL
// read models); version 1 or none is fine.
func TestHTTPSinkVersionAboveOneIsRefused(t *testing.T) {
	t.Parallel()
	base := "database: {url: " + testURL + "}\nprojectors:\n  - name: p\n    sink: {http: {url: 'http://127.0.0.1:1/e'}}\n"
	_, err := LoadBytes([]byte(base+"    version: 1\n"), nil)
	require.NoError(t, err)
	_, err = LoadBytes([]byte(base+"    version: 2\n"), nil)
	ps := requireProblems(t, err)
	require.Contains(t, paths(ps), "projectors[0].version")
	require.Contains(t, err.Error(), "must be 1 (or unset) for an HTTP sink")
}
