package store_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// TestOurFunctionsRunWithAPinnedSearchPath: every function in schema
// projectord, including the NOTIFY trigger's from `source prepare`, runs
// with search_path pg_catalog, pg_temp, so nothing another role placed on
// the caller's search_path can stand in for what it calls.
func TestOurFunctionsRunWithAPinnedSearchPath(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	src, err := tb.src.Resolve(tb.ctx, tb.pool)
	require.NoError(t, err)
	for _, s := range store.PrepareSQL(src, true, "events") {
		_, err := tb.pool.Exec(tb.ctx, s.SQL)
		require.NoError(t, err)
	}
	rows, err := tb.pool.Query(tb.ctx, `SELECT p.proname::text, coalesce(array_to_string(p.proconfig, ','), '')
		FROM pg_proc p WHERE p.pronamespace = 'projectord'::regnamespace ORDER BY 1`)
	require.NoError(t, err)
	got := map[string]string{}
	for rows.Next() {
		var name, conf string
		require.NoError(t, rows.Scan(&name, &conf))
		got[name] = conf
	}
	require.NoError(t, rows.Err())
	for _, fn := range []string{"advance", "advance_group", "try_jsonb", "notify_events"} {
		require.Equal(t, "search_path=pg_catalog, pg_temp", got[fn], fn)
	}
	require.Len(t, got, 4, "no function left unpinned: %v", got)
	require.NoError(t, store.CheckTrust(tb.ctx, tb.pool), "our own schema is trusted")
}
