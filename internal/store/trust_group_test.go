package store_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// TestCheckTrustRefusesSchemaOfSharedGroupRole: projectord's role
// (app) and another role (squatter) are both members of a group role. The
// squatter, acting as the group, creates schema projectord with its own
// advance(). CheckTrust, run as app, accepts it because app is a member of
// the owner; but every member of the group can plant code there, which then
// runs with app's privileges. Only an owner that already holds app's
// privileges (app itself, a member of app, a superuser) is safe.
func TestCheckTrustRefusesSchemaOfSharedGroupRole(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	tb := setup(t) // admin pool on a fresh database
	var db string
	require.NoError(t, tb.pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
	// The test database is migrated by the admin: drop that schema.
	_, err := tb.pool.Exec(ctx, `DROP SCHEMA projectord CASCADE`)
	require.NoError(t, err)
	sfx := fmt.Sprintf("%d", time.Now().UnixNano()%1_000_000_000)
	group, app, squatter := "grp_"+sfx, "app_"+sfx, "sq_"+sfx
	_, err = tb.pool.Exec(ctx, fmt.Sprintf(`CREATE ROLE %[1]s NOLOGIN; CREATE ROLE %[2]s LOGIN; CREATE ROLE %[3]s LOGIN;
		GRANT %[1]s TO %[2]s; GRANT %[1]s TO %[3]s; GRANT CREATE ON DATABASE %[4]s TO %[1]s`,
		group, app, squatter, pgx.Identifier{db}.Sanitize()))
	require.NoError(t, err)
	t.Cleanup(func() {
		c := context.WithoutCancel(ctx)
		for _, r := range []string{group, app, squatter} {
			_, _ = tb.pool.Exec(c, fmt.Sprintf(`DROP OWNED BY %[1]s CASCADE`, r))
		}
		_, _ = tb.pool.Exec(c, fmt.Sprintf(`DROP ROLE %s, %s, %s`, app, squatter, group))
	})
	connect := func(role string) *pgxpool.Pool {
		u, err := url.Parse(tb.url)
		require.NoError(t, err)
		u.User = url.User(role)
		p, err := pgxpool.New(ctx, u.String())
		require.NoError(t, err)
		t.Cleanup(p.Close)
		return p
	}
	sq := connect(squatter)
	_, err = sq.Exec(ctx, fmt.Sprintf(`SET ROLE %s; CREATE SCHEMA projectord;
		CREATE FUNCTION projectord.advance(text, bigint, xid8, bigint, xid8, bigint, bigint) RETURNS void
		LANGUAGE sql AS 'SELECT NULL'`, group))
	require.NoError(t, err)

	err = store.CheckTrust(ctx, connect(app))
	require.ErrorIs(t, err, store.ErrUntrustedSchema,
		"schema projectord was created by %s (as group %s), a role that does not hold %s's privileges", squatter, group, app)
}

// TestVerifyPreparedRefusesDescendingIndex: an index of the name
// source prepare uses already exists on (transaction_id DESC,
// global_position). CREATE INDEX ... IF NOT EXISTS skips it and
// VerifyPrepared reports success, though the reader's ORDER BY
// transaction_id, global_position cannot walk it (mixed directions).
func TestVerifyPreparedRefusesDescendingIndex(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	src, err := tb.src.Resolve(tb.ctx, tb.pool)
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `DROP INDEX public.events_transaction_id_global_position_idx;
		CREATE INDEX events_transaction_id_global_position_idx ON public.events (transaction_id DESC, global_position)`)
	require.NoError(t, err)
	for _, s := range store.PrepareSQL(src, false, "") {
		_, err := tb.pool.Exec(tb.ctx, s.SQL)
		require.NoError(t, err)
	}
	require.Error(t, store.VerifyPrepared(tb.ctx, tb.pool, src, false),
		"the index is not the (transaction_id, global_position) btree the reader walks")
}
