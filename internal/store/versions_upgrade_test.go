package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// README, "Upgrading a projector whose table has the view's name": version
// 1 predates versions and writes to the table readers query; version 2's
// promote renames it and creates the view in one DO block, and version 2's
// retire drops the renamed table. The README's example, with p for
// order_totals.
func TestVersionPromoteRenamesAVersion1TableNamedLikeTheView(t *testing.T) {
	tb := setup(t)
	target := store.NewTarget(tb.pool, 5*time.Second)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE p (order_id text PRIMARY KEY, total numeric NOT NULL);
		INSERT INTO p VALUES ('old', 1)`)
	require.NoError(t, err)
	promote := `DO $$ BEGIN
  IF to_regclass('p') IS NOT NULL AND
     (SELECT relkind FROM pg_class WHERE oid = to_regclass('p')) = 'r' THEN
    ALTER TABLE p RENAME TO p_v1;
  END IF;
  CREATE OR REPLACE VIEW p AS SELECT order_id, total FROM p_v2;
END $$`
	require.NoError(t, store.CheckVersionSQL(promote), "the README's promote passes the configuration check")
	v1 := store.Version{Name: "p", Version: 1}
	v2 := store.Version{Name: "p", Version: 2, Setup: `CREATE TABLE p_v2 (order_id text PRIMARY KEY, total numeric NOT NULL)`,
		Promote: promote, Retire: `DROP TABLE IF EXISTS p_v1`}
	_, err = target.EnsureVersion(tb.ctx, v1)
	require.NoError(t, err)
	e1 := tb.claimEpoch(t, target, v1.Key())
	promoted, err := target.Promote(tb.ctx, v1, e1)
	require.NoError(t, err)
	require.True(t, promoted)
	_, err = target.EnsureVersion(tb.ctx, v2)
	require.NoError(t, err)
	e2 := tb.claimEpoch(t, target, v2.Key())
	_, err = target.Setup(tb.ctx, v2, e2)
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO p_v2 VALUES ('new', 2)`)
	require.NoError(t, err)

	promoted, err = target.Promote(tb.ctx, v2, e2)
	require.NoError(t, err)
	require.True(t, promoted)
	var id string
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT string_agg(order_id, ',') FROM p`).Scan(&id))
	require.Equal(t, "new", id, "readers of p read version 2 through the view")
	var kind string
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT relkind::text FROM pg_class WHERE oid = to_regclass('p')`).Scan(&kind))
	require.Equal(t, "v", kind)

	retired, err := target.Retire(tb.ctx, v2, e2)
	require.NoError(t, err)
	require.Equal(t, []int{1}, retired)
	var gone bool
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT to_regclass('p_v1') IS NULL`).Scan(&gone))
	require.True(t, gone, "version 2's retire dropped version 1's renamed table")
}
