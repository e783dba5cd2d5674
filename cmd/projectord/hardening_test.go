package main

import (
	"context"
	"fmt"
	"net/url"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

var roleSeq atomic.Int64

// newRole creates a login role (the test cluster trusts loopback logins)
// allowed to create schemas in the test's database, and returns its name
// and a URL connecting as it. Roles are cluster-wide: it is dropped when
// the test ends, with everything it owns there.
func newRole(t *testing.T, admin *pgxpool.Pool, dbURL, prefix string) (string, string) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	name := fmt.Sprintf("%s_%d_%d", prefix, time.Now().UnixNano()%1_000_000_000, roleSeq.Add(1))
	var db string
	require.NoError(t, admin.QueryRow(ctx, `SELECT current_database()`).Scan(&db))
	_, err := admin.Exec(ctx, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN; GRANT CREATE ON DATABASE %[2]s TO %[1]s`,
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{db}.Sanitize()))
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = admin.Exec(ctx, fmt.Sprintf(`DROP OWNED BY %[1]s CASCADE; DROP ROLE %[1]s`, pgx.Identifier{name}.Sanitize()))
	})
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.User = url.User(name)
	return name, u.String()
}

func exitCode(t *testing.T, err error, out string) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, out)
	return exit.ExitCode()
}

// TestSquattedSchemaIsRefused: a role with CREATE on the database creates
// schema projectord first, fully migrated, with its own advance() that
// records every call. migrate and run, as projectord's role, refuse with
// exit 2 naming the owner, and the planted function never runs.
func TestSquattedSchemaIsRefused(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	squatter, squatURL := newRole(t, admin, dbURL, "squatter")
	app, appURL := newRole(t, admin, dbURL, "app")

	for _, q := range store.NativeTableSQL("public.events") {
		_, err := admin.Exec(ctx, q)
		require.NoError(t, err)
	}
	_, err = admin.Exec(ctx, fmt.Sprintf(`CREATE TABLE applied (position bigint);
		GRANT SELECT, INSERT ON events, applied TO %s;
		INSERT INTO events (stream_id, stream_version, event_type, data) VALUES ('s', 1, 'A', '{}'), ('s', 2, 'A', '{}')`,
		pgx.Identifier{app}.Sanitize()))
	require.NoError(t, err)

	// The squatter's schema is exactly ours, at the current version, but
	// its advance() is the squatter's code, and anyone may use it all.
	sq, err := pgxpool.New(ctx, squatURL)
	require.NoError(t, err)
	_, err = store.Migrate(ctx, sq, "squatter")
	require.NoError(t, err)
	_, err = sq.Exec(ctx, `CREATE TABLE projectord.planted_calls (at timestamptz DEFAULT now(), by_role text DEFAULT current_user);
		CREATE OR REPLACE FUNCTION projectord.advance(p_projector text, p_epoch bigint, p_from_xid xid8, p_from_position bigint,
			p_to_xid xid8, p_to_position bigint, p_events bigint) RETURNS void LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO projectord.planted_calls DEFAULT VALUES;
			UPDATE projectord.checkpoints SET last_xid = p_to_xid, last_position = p_to_position
			 WHERE projector = p_projector AND epoch = p_epoch;
		END $$;
		GRANT ALL ON SCHEMA projectord TO PUBLIC;
		GRANT ALL ON ALL TABLES IN SCHEMA projectord TO PUBLIC;
		GRANT ALL ON ALL SEQUENCES IN SCHEMA projectord TO PUBLIC`)
	require.NoError(t, err)
	sq.Close()

	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
coordination: {acquire_interval: 100ms}
http: {listen: ""}
projectors:
  - name: totals
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES (@position)"}}}
`, appURL))
	code, _, stderr := cli(t, "migrate", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "untrusted schema projectord")
	require.Contains(t, stderr, fmt.Sprintf("schema projectord is owned by role %q", squatter))
	require.Contains(t, stderr, fmt.Sprintf("not by %q", app))

	for _, args := range [][]string{{"run"}, {"run", "--no-migrate"}} {
		p := startProc(t, append(args, "--config", f)...)
		err = p.wait(t, 60*time.Second)
		require.Equal(t, exitConfig, exitCode(t, err, p.out.String()), "%v: %s", args, p.out.String())
		require.Contains(t, p.out.String(), fmt.Sprintf(`owned by role \"%s\"`, squatter), "%v", args)
	}
	code, _, stderr = cli(t, "status", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "untrusted schema projectord")

	var calls, applied int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM projectord.planted_calls`).Scan(&calls))
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FROM applied`).Scan(&applied))
	require.Zero(t, calls, "the planted advance() never ran")
	require.Zero(t, applied, "nothing was applied through the squatted schema")
}

// TestRunRefusesMoreProjectorsThanTheLockTableHolds configures one
// projector more than the test server's lock table allows one replica
// (computed from its real settings): `config validate --check-db` reports
// it with the numbers and the setting to raise, and `run` exits 2 before
// taking a single lock.
func TestRunRefusesMoreProjectorsThanTheLockTableHolds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}
	ls, err := store.ReadLockSettings(ctx, pool)
	require.NoError(t, err)
	const maxConns = 4
	n := ls.Budget(maxConns) + 1
	require.Greater(t, n, 1)

	var b strings.Builder
	fmt.Fprintf(&b, "database: {url: '%s', max_conns: %d}\nhttp: {listen: \"\"}\nprojectors:\n", dbURL, maxConns)
	for i := range n {
		fmt.Fprintf(&b, "  - {name: p%d, sink: {sql: {handlers: {A: 'SELECT 1'}}}}\n", i)
	}
	f := writeFile(t, "many.yaml", b.String())

	wantNumbers := fmt.Sprintf("%d projectors need %d advisory locks, but this server allows one replica at most %d", n, n, n-1)
	code, _, stderr := cli(t, "config", "validate", "--check-db", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "projectors: "+store.ErrLockBudget.Error())
	require.Contains(t, stderr, wantNumbers)
	require.Contains(t, stderr, fmt.Sprintf("max_locks_per_transaction (%d) × (max_connections (%d)", ls.MaxLocksPerTransaction, ls.MaxConnections))
	require.Contains(t, stderr, "Raise max_locks_per_transaction to at least")

	p := startProc(t, "run", "--config", f)
	err = p.wait(t, 120*time.Second)
	require.Equal(t, exitConfig, exitCode(t, err, p.out.String()), p.out.String())
	require.Contains(t, p.out.String(), wantNumbers)
	var registered int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM projectord.projectors`).Scan(&registered))
	require.Zero(t, registered, "refused before any projector started")

	require.NoError(t, ls.Check(n-1, maxConns), "one fewer fits")
}

// TestSourceTableResolvedOnceThroughSearchPath: public.events is prepared,
// app.events is not, and the role's search_path puts app first, so an
// unqualified source.table names app.events to PostgreSQL. check-db,
// prepare and run all use app.events.
func TestSourceTableResolvedOnceThroughSearchPath(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	admin, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := admin.Exec(ctx, q)
		require.NoError(t, err)
	}
	_, err = admin.Exec(ctx, `CREATE SCHEMA app;
		CREATE TABLE app.events (global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream_id text NOT NULL,
			stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb,
			created_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO app.events (stream_id, stream_version, event_type, data) VALUES ('app', 1, 'A', '{}'), ('app', 2, 'A', '{}');
		INSERT INTO public.events (stream_id, stream_version, event_type, data) VALUES ('public', 1, 'A', '{}');
		CREATE TABLE applied (stream_id text, position bigint)`)
	require.NoError(t, err)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", "app,public")
	u.RawQuery = q.Encode()
	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
source: {table: events}
coordination: {acquire_interval: 100ms}
http: {listen: ""}
projectors:
  - name: p
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES (@stream_id, @position)"}}}
`, u.String()))

	// app.events has no xid8 column yet: the check must say so, not
	// approve public.events.
	code, out, stderr := cli(t, "config", "validate", "--check-db", "--config", f)
	require.Equal(t, exitConfig, code, out+stderr)
	require.Contains(t, out, "source table events resolves to app.events")
	require.Contains(t, stderr, "table app.events")

	code, out, stderr = cli(t, "source", "prepare", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "resolves to app.events")
	require.Contains(t, out, `ALTER TABLE "app"."events" ADD COLUMN`)
	require.Contains(t, out, `ON "app"."events" ("transaction_id", "global_position")`)
	code, _, stderr = cli(t, "source", "prepare", "--apply", "--config", f)
	require.Equal(t, exitOK, code, stderr)

	code, out, stderr = cli(t, "config", "validate", "--check-db", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, "resolves to app.events")

	_, err = admin.Exec(ctx, `INSERT INTO app.events (stream_id, stream_version, event_type, data) VALUES ('app', 3, 'A', '{}')`)
	require.NoError(t, err)
	p := startProc(t, "run", "--config", f)
	t.Cleanup(func() { _ = p.cmd.Process.Kill() })
	waitFor(t, 60*time.Second, func() bool {
		var n int
		return admin.QueryRow(ctx, `SELECT count(*) FROM applied`).Scan(&n) == nil && n >= 3
	})
	var fromApp, total int
	require.NoError(t, admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE stream_id = 'app'), count(*) FROM applied`).Scan(&fromApp, &total))
	require.Equal(t, 3, fromApp)
	require.Equal(t, 3, total, "nothing read from public.events")
	require.Contains(t, p.out.String(), `"resolved":"app.events"`)
}

// preparedIndex returns the valid btree index on (transaction_id,
// global_position) of table, "" when there is none.
func preparedIndex(t *testing.T, pool *pgxpool.Pool, table string) string {
	t.Helper()
	var name string
	err := pool.QueryRow(t.Context(), `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = to_regclass($1) AND i.indisvalid
		  AND (SELECT array_agg(a.attname::text ORDER BY k.n) FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, n)
		       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum) = '{transaction_id,global_position}'`,
		pgx.Identifier{"public", table}.Sanitize()).Scan(&name)
	if err == pgx.ErrNoRows {
		return ""
	}
	require.NoError(t, err)
	return name
}

// TestSourcePrepareWith63ByteTableName: the index name is derived from the
// table's, and must neither collide with it nor be cut short into it.
func TestSourcePrepareWith63ByteTableName(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	// Two tables sharing their first 62 bytes: their objects must differ.
	tables := []string{strings.Repeat("e", 62) + "1", strings.Repeat("e", 62) + "2"}
	for _, table := range tables {
		require.Len(t, table, 63)
		_, err = pool.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
			stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL,
			metadata jsonb, created_at timestamptz NOT NULL DEFAULT now())`, pgx.Identifier{table}.Sanitize()))
		require.NoError(t, err)
	}
	var names []string
	for _, table := range tables {
		f := writeFile(t, "c.yaml", fmt.Sprintf("database: {url: '%s'}\nsource: {table: %s}\n", dbURL, table))
		code, out, stderr := cli(t, "source", "prepare", "--apply", "--notify", "--config", f)
		require.Equal(t, exitOK, code, out+stderr)
		require.Contains(t, out, "Applied and verified")
		idx := preparedIndex(t, pool, table)
		require.NotEmpty(t, idx, "the index exists: %s", out)
		require.NotEqual(t, table, idx)
		require.LessOrEqual(t, len(idx), 63)
		names = append(names, idx)
		var triggers int
		require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal`,
			pgx.Identifier{table}.Sanitize()).Scan(&triggers))
		require.Equal(t, 1, triggers)

		code, out, stderr = cli(t, "source", "prepare", "--apply", "--notify", "--config", f)
		require.Equal(t, exitOK, code, "idempotent: %s", out+stderr)
		code, _, stderr = cli(t, "config", "validate", "--check-db", "--config", f)
		require.Equal(t, exitOK, code, stderr)
	}
	require.NotEqual(t, names[0], names[1])
}

// TestSourcePrepareFailsOnAnInvalidIndex: a concurrent build that failed
// leaves an INVALID index of the same name; IF NOT EXISTS skips it, so
// prepare must find it and fail, not print success.
func TestSourcePrepareFailsOnAnInvalidIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, dbURL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `CREATE TABLE events (global_position bigint NOT NULL, transaction_id xid8 NOT NULL DEFAULT '1',
		stream_id text NOT NULL, stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL,
		metadata jsonb, created_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO events (global_position, stream_id, stream_version, event_type, data) VALUES (1, 's', 1, 'A', '{}'), (1, 's', 2, 'A', '{}')`)
	require.NoError(t, err)
	// Duplicates make the unique build fail, leaving the index INVALID.
	_, err = pool.Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY events_transaction_id_global_position_idx ON events (transaction_id, global_position)`)
	require.Error(t, err)

	f := writeFile(t, "c.yaml", fmt.Sprintf("database: {url: '%s'}\n", dbURL))
	code, out, stderr := cli(t, "source", "prepare", "--apply", "--config", f)
	require.NotEqual(t, exitOK, code, out+stderr)
	require.NotContains(t, out, "Applied")
	require.Contains(t, stderr, "events_transaction_id_global_position_idx on public.events is INVALID")
	require.Contains(t, stderr, "DROP INDEX CONCURRENTLY")
}
