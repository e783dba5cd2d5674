package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/storeddl"
)

// messageDBSchema is Message DB 1.3.1's table, its category function and
// its indexes, as message-db/message-db database/schema/message-store.sql,
// tables/messages.sql, functions/category.sql and indexes/*.sql at 25da82b0
// create them.
const messageDBSchema = `CREATE SCHEMA IF NOT EXISTS message_store;
CREATE TABLE IF NOT EXISTS message_store.messages (
  global_position bigserial NOT NULL,
  position bigint NOT NULL,
  time TIMESTAMP WITHOUT TIME ZONE DEFAULT (now() AT TIME ZONE 'utc') NOT NULL,
  stream_name text NOT NULL,
  type text NOT NULL,
  data jsonb,
  metadata jsonb,
  id UUID NOT NULL DEFAULT gen_random_uuid()
);

ALTER TABLE message_store.messages ADD PRIMARY KEY (global_position) NOT DEFERRABLE INITIALLY IMMEDIATE;
CREATE OR REPLACE FUNCTION message_store.category(
  stream_name varchar
)
RETURNS varchar
AS $$
BEGIN
  RETURN SPLIT_PART(category.stream_name, '-', 1);
END;
$$ LANGUAGE plpgsql
IMMUTABLE;
DROP INDEX IF EXISTS message_store.messages_category;

CREATE INDEX messages_category ON message_store.messages (
  message_store.category(stream_name),
  global_position,
  message_store.category(metadata->>'correlationStreamName')
);
DROP INDEX IF EXISTS message_store.messages_id;

CREATE UNIQUE INDEX messages_id ON message_store.messages (
  id
);
DROP INDEX IF EXISTS messages_stream;

CREATE UNIQUE INDEX messages_stream ON message_store.messages (
  stream_name,
  position
);`

// eventuousSchema is Eventuous' 1_Schema.sql (streams, messages,
// checkpoints, the stream_message type) in schema eventuous.
var eventuousSchema = storeddl.Eventuous("eventuous")[0]

// TestPresetQueriesWalkTheCursorIndex: for every preset, on its store's
// table with tens of thousands of rows and after source prepare, the
// planner keeps the preset's relation flattened: the batch read, the
// head, the newest cursor and the lag of a projector near the head are
// index scans, and none sorts the table (DESIGN.md §9).
func TestPresetQueriesWalkTheCursorIndex(t *testing.T) {
	t.Parallel()
	ctx, pool := freshDB(t)
	setups := map[string]string{
		"emmett": "", // emmettTable
		"messagedb": messageDBSchema + `;
			INSERT INTO message_store.messages (position, stream_name, type, data, metadata)
			SELECT g / 100, 'account-' || (g % 100), 'Deposited', '{}', '{}' FROM generate_series(1, 30000) g`,
		"marten": `CREATE TABLE mt_events (seq_id bigint NOT NULL PRIMARY KEY, id uuid NOT NULL,
				stream_id uuid, version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
				timestamp timestamptz NOT NULL DEFAULT now(), tenant_id varchar DEFAULT '*DEFAULT*',
				mt_dotnet_type varchar, is_archived bool DEFAULT FALSE);
			CREATE UNIQUE INDEX pk_mt_events_id_unique ON mt_events (id);
			INSERT INTO mt_events (seq_id, id, stream_id, version, data, type, is_archived)
			SELECT g, gen_random_uuid(), gen_random_uuid(), 1, '{}', 'deposited', g % 10 = 0 FROM generate_series(1, 30000) g`,
		"eventcore": storeddl.EventCore + `;
			INSERT INTO eventcore_events (event_id, stream_id, event_type, event_data)
			SELECT gen_random_uuid(), 'account-' || (g % 100), 'Deposited', '{}' FROM generate_series(1, 30000) g`,
		"eventuous": eventuousSchema + `;
			INSERT INTO eventuous.streams (stream_name) SELECT 'account-' || g FROM generate_series(1, 100) g;
			INSERT INTO eventuous.messages (message_id, message_type, stream_id, stream_position, json_data, created)
			SELECT gen_random_uuid(), 'Deposited', 1 + g % 100, g / 100, '{}', now() AT TIME ZONE 'utc' FROM generate_series(1, 30000) g`,
	}
	for _, preset := range store.PresetNames() {
		if preset == "native" {
			continue
		}
		setup, ok := setups[preset]
		require.True(t, ok, "a table for preset %s", preset)
		if preset == "emmett" {
			emmettTable(t, ctx, pool)
		} else {
			_, err := pool.Exec(ctx, setup)
			require.NoError(t, err, preset)
		}
		src := presetSource(t, ctx, pool, preset)
		steps, err := store.PlanPrepare(ctx, pool, src, false, "")
		require.NoError(t, err)
		applyChecked(t, ctx, pool, steps)
		_, err = pool.Exec(ctx, "ANALYZE")
		require.NoError(t, err)
		require.NoError(t, store.CheckCursorIndex(ctx, pool, src))

		// A cursor a thousand events in, and one a hundred from the end.
		cursorAt := func(order string) store.Cursor {
			var c store.Cursor
			require.NoError(t, pool.QueryRow(ctx, fmt.Sprintf(`SELECT %[1]s, %[2]s FROM %[3]s WHERE %[2]s IS NOT NULL
				ORDER BY %[1]s %[4]s, %[2]s %[4]s OFFSET 1000 LIMIT 1`, src.Columns.TransactionID, src.Columns.Position, src.QualifiedName(), order)).
				Scan(&c.XID, &c.Position))
			return c
		}
		early, late := cursorAt("ASC"), cursorAt("DESC")
		// Emmett's leaves are named after the table: emt_messages_...
		table := src.QualifiedName()[strings.IndexByte(src.QualifiedName(), '.')+1:]
		read, err := store.ReadSQL(ctx, pool, src, store.Filter{})
		require.NoError(t, err)
		for _, q := range []struct {
			what, sql string
			args      []any
		}{
			{"batch", read, []any{early.XID, early.Position, 500}},
			{"head", store.HeadSQL(src), nil},
			{"newest", store.NewestSQL(src), nil},
			{"lag near the head", store.LagSQL(src, store.Filter{}), []any{late.XID, late.Position, store.LagCap}},
		} {
			plan := explainPlan(t, ctx, pool, q.sql, q.args...)
			require.Contains(t, plan, "Index", "%s %s: %s\n%s", preset, q.what, q.sql, plan)
			// Eventuous' streams table is small: a scan of it is no scan of the events.
			require.NotContains(t, plan, "Seq Scan on "+table, "%s %s: %s\n%s", preset, q.what, q.sql, plan)
			require.NotContains(t, plan, "Sort", "%s %s: %s\n%s", preset, q.what, q.sql, plan)
		}
	}
}

func explainPlan(t *testing.T, ctx context.Context, pool *pgxpool.Pool, q string, args ...any) string {
	t.Helper()
	rows, err := pool.Query(ctx, "EXPLAIN (COSTS OFF) "+q, args...)
	require.NoError(t, err, q)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(plan, "\n")
}
