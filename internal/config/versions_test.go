package config

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVersionKeysAreChecked(t *testing.T) {
	t.Parallel()
	base := "database: {url: " + testURL + "}\nprojectors:\n  - name: p\n"
	ok := base + `    version: 2
    sink:
      sql:
        handlers: {A: "INSERT INTO p_v2 VALUES (1)"}
        setup: CREATE TABLE IF NOT EXISTS p_v2 (n int)
        promote: CREATE OR REPLACE VIEW p AS SELECT n FROM p_v2
        retire: DROP TABLE IF EXISTS p_v1
`
	cfg, err := LoadBytes([]byte(ok), nil)
	require.NoError(t, err)
	require.Equal(t, 2, cfg.Projectors[0].EffectiveVersion())

	unset, err := LoadBytes([]byte(base+"    sink: {sql: {handlers: {A: SELECT 1}}}\n"), nil)
	require.NoError(t, err)
	require.Equal(t, 1, unset.Projectors[0].EffectiveVersion(), "a projector without version is version 1")

	bad := base + `    version: -1
    sink:
      sql:
        handlers: {A: SELECT 1}
        setup: "CREATE TABLE x (n int); COMMIT"
        promote: COMMIT
        retire: "DO $$ BEGIN DELETE FROM x; ROLLBACK; END $$"
`
	_, err = LoadBytes([]byte(bad), nil)
	ps := requireProblems(t, err)
	require.Subset(t, paths(ps), []string{"projectors[0].version", "projectors[0].sink.sql.setup",
		"projectors[0].sink.sql.promote", "projectors[0].sink.sql.retire"})

	_, err = LoadBytes([]byte(base+"    sink: {sql: {handlers: {A: SELECT 1}, promote: \"SELECT @data\"}}\n"), nil)
	ps = requireProblems(t, err)
	require.Contains(t, paths(ps), "projectors[0].sink.sql.promote")
}
