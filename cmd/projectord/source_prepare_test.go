package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
	"github.com/projectord/projectord/internal/store/storeddl"
)

// TestSourcePrepareEmmettPartitioned: on Emmett's partitioned table the
// command prints every step with why and what it locks, applies them,
// verifies, and then has nothing to do.
func TestSourcePrepareEmmettPartitioned(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, storeddl.Emmett)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `SELECT emt_append_to_stream(ARRAY['m-1'], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb], ARRAY['1'],
		ARRAY['Opened'], ARRAY['E'], 'account-1', 'account', NULL, 'emt:default')`)
	require.NoError(t, err)
	f := writeFile(t, "c.yaml", fmt.Sprintf("database: {url: '%s'}\nsource: {preset: emmett}\n", url))

	code, out, stderr := cli(t, "source", "prepare", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, "resolves to public.emt_messages")
	require.Contains(t, out, "-- 1/7: create the cursor index on partitioned table public.emt_messages alone")
	require.Contains(t, out, "-- locks: SHARE on public.emt_messages, catalogue only")
	require.Contains(t, out, `CREATE INDEX IF NOT EXISTS "idx_messages_transaction_id_global_position" ON ONLY "public"."emt_messages"`)
	require.Contains(t, out, `-- locks: SHARE UPDATE EXCLUSIVE on public.emt_messages_emt_default_active for the whole build`)
	require.Equal(t, 3, strings.Count(out, "ATTACH PARTITION"), out)
	require.Equal(t, 7, strings.Count(out, "-- locks: "), out)
	require.NotContains(t, out, "ALTER TABLE", "Emmett's xid8 column is used as it is")
	require.Contains(t, out, "Not applied")

	code, out, stderr = cli(t, "source", "prepare", "--apply", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, "-- step 7/7 done in ")
	require.Contains(t, out, "Applied and verified")
	var valid bool
	require.NoError(t, pool.QueryRow(ctx, `SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_messages_transaction_id_global_position'::regclass`).Scan(&valid))
	require.True(t, valid, "attached on every partition")

	for _, args := range [][]string{{"source", "prepare"}, {"source", "prepare", "--apply"}} {
		code, out, stderr = cli(t, append(args, "--config", f)...)
		require.Equal(t, exitOK, code, out+stderr)
		require.Contains(t, out, "-- Nothing to do: public.emt_messages already has everything source prepare adds.")
		require.NotContains(t, out, "-- locks")
	}
	require.Contains(t, out, "-- Verified.")
}

// TestSourcePrepareEventCore: the eventcore table gets its xid8 column, an
// identity position (the step says it rewrites the table) and the index,
// with its triggers left as they are.
func TestSourcePrepareEventCore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, storeddl.EventCore)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data) VALUES (gen_random_uuid(), 'a', 'E', '{}');
		INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data) VALUES (gen_random_uuid(), 'b', 'E', '{}');
		INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data) VALUES (gen_random_uuid(), 'a', 'E', '{}')`)
	require.NoError(t, err)
	f := writeFile(t, "c.yaml", fmt.Sprintf("database: {url: '%s'}\nsource: {preset: eventcore}\n", url))

	code, out, stderr := cli(t, "source", "prepare", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, out, `ADD COLUMN IF NOT EXISTS "transaction_id" xid8`)
	require.Contains(t, out, `ADD COLUMN "global_position" bigint GENERATED ALWAYS AS IDENTITY`)
	require.Contains(t, out, "-- locks: ACCESS EXCLUSIVE on public.eventcore_events for two full rewrites of the table (CLUSTER, then the identity column)")
	require.Contains(t, out, `CREATE INDEX CONCURRENTLY IF NOT EXISTS "eventcore_events_transaction_id_global_position_idx"`)

	code, out, stderr = cli(t, "source", "prepare", "--apply", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, "Applied and verified")
	var n, distinct, triggers int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT global_position),
		(SELECT count(*) FROM pg_trigger WHERE tgrelid = 'eventcore_events'::regclass AND NOT tgisinternal) FROM eventcore_events`).Scan(&n, &distinct, &triggers))
	require.Equal(t, 3, n)
	require.Equal(t, 3, distinct)
	require.Equal(t, 3, triggers)
	code, out, stderr = cli(t, "source", "prepare", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, "Nothing to do")
}

// TestSourcePrepareGivesUpALockItCannotGet: with a transaction holding
// the table, --apply stops at the first step within --lock-timeout,
// changing nothing and naming the holder; once it ends, re-running
// applies everything.
func TestSourcePrepareGivesUpALockItCannotGet(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, `CREATE TABLE events (global_position bigint GENERATED ALWAYS AS IDENTITY, stream_id text NOT NULL,
		stream_version bigint NOT NULL, event_type text NOT NULL, data jsonb NOT NULL, metadata jsonb, created_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	f := writeFile(t, "c.yaml", fmt.Sprintf("database: {url: '%s'}\n", url))

	code, _, stderr := cli(t, "source", "prepare", "--apply", "--lock-timeout", "-1s", "--config", f)
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, "--lock-timeout -1s")

	holder, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT count(*) FROM events`)
	require.NoError(t, err)
	code, out, stderr := cli(t, "source", "prepare", "--apply", "--lock-timeout", "100ms", "--config", f)
	require.Equal(t, exitRuntime, code, out+stderr)
	require.Contains(t, stderr, "error applying step 1/2")
	require.Contains(t, stderr, "nothing of this step was applied")
	require.Contains(t, stderr, "idle in transaction")
	require.Contains(t, stderr, "holds ACCESS SHARE on public.events")
	require.NotContains(t, out, "Applied")
	require.NoError(t, holder.Rollback(ctx))

	code, out, stderr = cli(t, "source", "prepare", "--apply", "--lock-timeout", "100ms", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, "Applied and verified")
}

// TestSourcePrepareRefusesToReAddADroppedXID8Column: Marten's schema
// migrations drop columns they do not know, source prepare's xid8 column
// among them. Adding it again gives every row xid 1, below the cursor of
// a projector that has read the table, which would then never read the
// events it had not applied: prepare refuses, naming the projector, until
// it is reset.
func TestSourcePrepareRefusesToReAddADroppedXID8Column(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = store.Migrate(ctx, pool, "test")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE mt_events (seq_id bigint NOT NULL PRIMARY KEY, id uuid NOT NULL,
			stream_id uuid, version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
			timestamp timestamptz NOT NULL DEFAULT now(), tenant_id varchar DEFAULT '*DEFAULT*',
			mt_dotnet_type varchar, is_archived bool DEFAULT FALSE);
		CREATE TABLE applied (seq bigint)`)
	require.NoError(t, err)
	f := writeFile(t, "c.yaml", fmt.Sprintf(`database: {url: '%s'}
source: {preset: marten}
projectors:
  - name: totals
    sink: {sql: {handlers: {deposited: "INSERT INTO applied VALUES (@position)"}, reset: "TRUNCATE applied"}}
`, url))
	code, out, stderr := cli(t, "source", "prepare", "--apply", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)

	// The projector has read part of the table; then Marten's migration
	// drops the column (and with it the index).
	_, err = pool.Exec(ctx, `INSERT INTO projectord.checkpoints (projector, last_xid, last_position, ordering) VALUES ('totals', '1000', 2, 'xid8');
		alter table public.mt_events drop column transaction_id`)
	require.NoError(t, err)
	for _, args := range [][]string{{"source", "prepare"}, {"source", "prepare", "--apply"}} {
		code, out, stderr = cli(t, append(args, "--config", f)...)
		require.Equal(t, exitRuntime, code, out+stderr)
		require.Contains(t, stderr, `source table public.mt_events has no xid8 column "transaction_id", but projector totals (cursor `)
		require.Contains(t, stderr, "projectord reset NAME --yes")
	}
	var cols int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM pg_attribute WHERE attrelid = 'mt_events'::regclass AND attname = 'transaction_id'`).Scan(&cols))
	require.Zero(t, cols, "nothing was applied")

	code, out, stderr = cli(t, "reset", "totals", "--yes", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)
	code, out, stderr = cli(t, "source", "prepare", "--apply", "--config", f)
	require.Equal(t, exitOK, code, out+stderr)
	require.Contains(t, out, "Applied and verified")
}
