package store_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// A preset's row rule is a view of the table for every query: rows it
// leaves out (Emmett's archived rows, commands, other partitions) are not
// read, are not the head, and are not lag, so a projector that has read
// every included row is caught up even when the newest row is excluded.
func TestPresetRowsAreTheOnlyRowsReadCountedOrHead(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE emt_messages (
		stream_position bigint NOT NULL, global_position bigint GENERATED ALWAYS AS IDENTITY,
		transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), created timestamptz NOT NULL DEFAULT now(),
		is_archived boolean NOT NULL DEFAULT FALSE, message_kind varchar(1) NOT NULL DEFAULT 'E',
		stream_id text NOT NULL, partition text NOT NULL DEFAULT 'emt:default',
		message_schema_version text NOT NULL DEFAULT '1', message_id text NOT NULL, message_type text NOT NULL,
		message_data jsonb NOT NULL, message_metadata jsonb NOT NULL DEFAULT '{}');
		CREATE INDEX ON emt_messages (transaction_id, global_position)`)
	require.NoError(t, err)
	add := func(id, partition string, archived bool, kind string) {
		_, err := tb.pool.Exec(tb.ctx, `INSERT INTO emt_messages (stream_position, stream_id, partition, is_archived, message_kind, message_id, message_type, message_data)
			VALUES (1, 's-' || $1, $2, $3, $4, $1, 'Added', jsonb_build_object('id', $1::text))`, id, partition, archived, kind)
		require.NoError(t, err)
	}
	add("e1", "emt:default", false, "E")
	add("archived", "emt:default", true, "E")
	add("e2", "emt:default", false, "E")
	add("command", "emt:default", false, "C")
	add("elsewhere", "tenant-b", false, "E")

	src := presetSource(t, tb.ctx, tb.pool, "emmett")
	_, err = src.Inspect(tb.ctx, tb.pool)
	require.NoError(t, err)
	r := store.NewReader(tb.pool, src, 5*time.Second)
	got, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	var ids []string
	for _, e := range got {
		ids = append(ids, e.EventID)
	}
	require.Equal(t, []string{"e1", "e2"}, ids)
	require.Equal(t, "s-e1", got[0].StreamID)
	require.Equal(t, "Added", got[0].Type)

	head, ok, err := r.Head(tb.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, got[1].Cursor, head, "the head is the newest included row, not the newest row")
	newest, _, err := r.Newest(tb.ctx)
	require.NoError(t, err)
	require.Equal(t, got[1].Cursor, newest)

	lag, _, err := r.Lag(tb.ctx, store.Cursor{}, store.Filter{})
	require.NoError(t, err)
	require.Equal(t, int64(2), lag, "excluded rows are not lag")
	lag, _, err = r.Lag(tb.ctx, got[1].Cursor, store.Filter{})
	require.NoError(t, err)
	require.Zero(t, lag, "a projector past every included row is caught up")
}

// Eventuous keeps stream names in another table: they arrive as the
// event's stream id, and stream_prefix filters on them.
func TestPresetStreamNamesFromAnotherTable(t *testing.T) {
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE SCHEMA eventuous;
		CREATE TABLE eventuous.streams (stream_name varchar(1000) NOT NULL UNIQUE,
			stream_id integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY, version integer NOT NULL DEFAULT -1);
		CREATE TABLE eventuous.messages (message_id uuid, message_type varchar NOT NULL,
			stream_id integer NOT NULL REFERENCES eventuous.streams (stream_id), stream_position integer NOT NULL,
			global_position bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY, json_data jsonb NOT NULL, json_metadata jsonb,
			created timestamp NOT NULL,
			transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id());
		CREATE INDEX ON eventuous.messages (transaction_id, global_position);
		INSERT INTO eventuous.streams (stream_name) VALUES ('Order-1'), ('Cart-1');
		INSERT INTO eventuous.messages (message_id, message_type, stream_id, stream_position, json_data, created)
			VALUES (gen_random_uuid(), 'OrderPlaced', 1, 0, '{"n":1}', now() AT TIME ZONE 'utc'),
			       (gen_random_uuid(), 'CartOpened', 2, 0, '{"n":2}', now() AT TIME ZONE 'utc'),
			       (gen_random_uuid(), 'OrderPaid', 1, 1, '{"n":3}', now() AT TIME ZONE 'utc')`)
	require.NoError(t, err)
	src := presetSource(t, tb.ctx, tb.pool, "eventuous")
	l, err := src.Inspect(tb.ctx, tb.pool)
	require.NoError(t, err)
	r := store.NewReader(tb.pool, src, 5*time.Second).WithLayout(l)
	all, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Equal(t, []string{"Order-1", "Cart-1", "Order-1"}, []string{all[0].StreamID, all[1].StreamID, all[2].StreamID})
	require.Equal(t, []int64{0, 0, 1}, []int64{all[0].StreamVersion, all[1].StreamVersion, all[2].StreamVersion})
	orders, err := r.Read(tb.ctx, store.Cursor{}, store.Filter{StreamPrefix: "Order-"}, 10, nil)
	require.NoError(t, err)
	require.Len(t, orders, 2)
	require.Equal(t, "OrderPaid", orders[1].Type)
	require.Empty(t, store.Source.NullableWarnings(src, l), "the stream name column is declared NOT NULL")

	// Without the streams table the preset cannot read: said at Inspect,
	// not in the middle of a run.
	_, err = tb.pool.Exec(tb.ctx, `ALTER TABLE eventuous.messages DROP CONSTRAINT messages_stream_id_fkey; DROP TABLE eventuous.streams`)
	require.NoError(t, err)
	_, err = src.Inspect(tb.ctx, tb.pool)
	require.ErrorContains(t, err, "does not read as a eventuous store")
	require.ErrorContains(t, err, "streams")
}

// Marten: archived events are skipped as Marten's daemon skips them, and
// the tenant reaches the handler's metadata.
func TestPresetMartenTenantAndArchived(t *testing.T) {
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE mt_events (seq_id bigint NOT NULL PRIMARY KEY, id uuid NOT NULL,
			stream_id uuid, version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
			timestamp timestamptz NOT NULL DEFAULT now(), tenant_id varchar DEFAULT '*DEFAULT*',
			mt_dotnet_type varchar, is_archived bool DEFAULT FALSE,
			transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id());
		CREATE INDEX ON mt_events (transaction_id, seq_id);
		INSERT INTO mt_events (seq_id, id, stream_id, version, data, type, tenant_id, is_archived) VALUES
			(1, gen_random_uuid(), gen_random_uuid(), 1, '{}', 'order_placed', 'acme', false),
			(2, gen_random_uuid(), gen_random_uuid(), 1, '{}', 'order_placed', 'acme', true),
			(3, gen_random_uuid(), gen_random_uuid(), 1, '{}', 'order_placed', 'globex', false)`)
	require.NoError(t, err)
	src := presetSource(t, tb.ctx, tb.pool, "marten")
	l, err := src.Inspect(tb.ctx, tb.pool)
	require.NoError(t, err)
	got, err := store.NewReader(tb.pool, src, 5*time.Second).WithLayout(l).Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, got, 2)
	var tenants []string
	for _, e := range got {
		var m struct {
			TenantID string `json:"tenant_id"`
		}
		require.NoError(t, json.Unmarshal(e.Metadata, &m))
		tenants = append(tenants, m.TenantID)
		require.Len(t, e.StreamID, 36, "a uuid stream id arrives as its text")
	}
	require.Equal(t, []string{"acme", "globex"}, tenants)
	require.Equal(t, []int64{1, 3}, []int64{got[0].Cursor.Position, got[1].Cursor.Position})
}

// eventcore has no global position until source prepare adds one: Inspect
// says so rather than only naming a missing column.
func TestPresetWithoutPositionSaysToPrepare(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE eventcore_events (event_id uuid PRIMARY KEY, stream_id text NOT NULL,
		stream_version bigint NOT NULL, event_type text NOT NULL, event_data jsonb NOT NULL,
		metadata jsonb NOT NULL DEFAULT '{}'::jsonb, created_at timestamptz NOT NULL DEFAULT now(),
		transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id())`)
	require.NoError(t, err)
	src := presetSource(t, tb.ctx, tb.pool, "eventcore")
	_, err = src.Inspect(tb.ctx, tb.pool)
	require.ErrorContains(t, err, `column "global_position" not found`)
	require.ErrorContains(t, err, "projectord source prepare")
}

// Marten's tenant-partitioned events draw seq_id from a sequence per
// tenant: positions repeat across tenants, which the cursor cannot order.
// The preset refuses that layout at start rather than skip events.
func TestPresetMartenRefusesTenantPartitionedEvents(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE mt_events (seq_id bigint NOT NULL, id uuid NOT NULL,
			stream_id uuid, version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
			timestamp timestamptz NOT NULL DEFAULT now(), tenant_id varchar NOT NULL DEFAULT '*DEFAULT*',
			mt_dotnet_type varchar, is_archived bool DEFAULT FALSE,
			transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), PRIMARY KEY (seq_id, tenant_id)) PARTITION BY LIST (tenant_id);
		CREATE TABLE mt_events_acme PARTITION OF mt_events FOR VALUES IN ('acme')`)
	require.NoError(t, err)
	src := presetSource(t, tb.ctx, tb.pool, "marten")
	_, err = src.Inspect(tb.ctx, tb.pool)
	require.ErrorIs(t, err, store.ErrUnsupportedSource)
	require.ErrorContains(t, err, "UseTenantPartitionedEvents")

	// The default layout (seq_id alone the key) is read.
	_, err = tb.pool.Exec(tb.ctx, `DROP TABLE mt_events; CREATE TABLE mt_events (seq_id bigint PRIMARY KEY, id uuid NOT NULL,
			stream_id uuid, version bigint NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL,
			timestamp timestamptz NOT NULL DEFAULT now(), tenant_id varchar DEFAULT '*DEFAULT*',
			mt_dotnet_type varchar, is_archived bool DEFAULT FALSE, transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id())`)
	require.NoError(t, err)
	src = presetSource(t, tb.ctx, tb.pool, "marten")
	_, err = src.Inspect(tb.ctx, tb.pool)
	require.NoError(t, err)
}

// Eventuous' own subscriptions fill a gap in global_position that
// outlives their timeout with a tombstone: a '$tombstone' message in
// stream '__tombstones__' at the gap's position, which they then skip.
// The preset skips it too: it is not read, not the head, not lag.
func TestPresetEventuousSkipsGapTombstones(t *testing.T) {
	tb := setup(t)
	// Eventuous' own schema in schema eventuous; then source prepare.
	_, err := tb.pool.Exec(tb.ctx, eventuousSchema)
	require.NoError(t, err)
	src := presetSource(t, tb.ctx, tb.pool, "eventuous")
	steps, err := store.PlanPrepare(tb.ctx, tb.pool, src, false, "")
	require.NoError(t, err)
	for _, s := range steps {
		require.NoError(t, store.ApplyPrepareStep(tb.ctx, tb.pool, s, 10*time.Second), s.SQL)
	}
	appendOne := func(stream, typ string) {
		_, err := tb.pool.Exec(tb.ctx, `INSERT INTO eventuous.streams (stream_name) VALUES ($1) ON CONFLICT (stream_name) DO NOTHING;
			`, stream)
		require.NoError(t, err)
		_, err = tb.pool.Exec(tb.ctx, `INSERT INTO eventuous.messages (message_id, message_type, stream_id, stream_position, json_data, created)
			SELECT gen_random_uuid(), $2, s.stream_id, s.version + 1, '{}', now() AT TIME ZONE 'utc' FROM eventuous.streams s WHERE s.stream_name = $1`, stream, typ)
		require.NoError(t, err)
		_, err = tb.pool.Exec(tb.ctx, `UPDATE eventuous.streams SET version = version + 1 WHERE stream_name = $1`, stream)
		require.NoError(t, err)
	}
	appendOne("Order-1", "OrderPlaced")
	// A writer that rolls back leaves a gap in global_position.
	var gap int64
	func() {
		tx, err := tb.pool.Begin(tb.ctx)
		require.NoError(t, err)
		defer func() { require.NoError(t, tx.Rollback(tb.ctx)) }()
		require.NoError(t, tx.QueryRow(tb.ctx, `INSERT INTO eventuous.messages (message_id, message_type, stream_id, stream_position, json_data, created)
			SELECT gen_random_uuid(), 'OrderPaid', stream_id, 1, '{}', now() AT TIME ZONE 'utc' FROM eventuous.streams WHERE stream_name = 'Order-1'
			RETURNING global_position`).Scan(&gap))
	}()
	appendOne("Order-1", "OrderShipped")
	// What Eventuous' try_insert_tombstone does for that gap
	// (Scripts/9_TryInsertTombstone.sql at
	// 83b3dddcb353400fa75082f346585eb47d112865).
	_, err = tb.pool.Exec(tb.ctx, `insert into eventuous.streams(stream_name, version) values ('__tombstones__', -1) on conflict (stream_name) do nothing;
		update eventuous.streams set version = version + 1 where stream_name = '__tombstones__'`)
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `insert into eventuous.messages(message_id, message_type, stream_id, stream_position, global_position, json_data, json_metadata, created)
		overriding system value
		select gen_random_uuid(), '$tombstone', stream_id, version, $1, '{}'::jsonb, '{}'::jsonb, (now() at time zone 'utc')
		from eventuous.streams where stream_name = '__tombstones__'
		on conflict do nothing`, gap)
	require.NoError(t, err)

	l, err := src.Inspect(tb.ctx, tb.pool)
	require.NoError(t, err)
	r := store.NewReader(tb.pool, src, 5*time.Second).WithLayout(l)
	var got []store.Event
	testsupport.Until(t, "the events are below the horizon", time.Minute, func() bool {
		got, err = r.Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
		require.NoError(t, err)
		return len(got) >= 2
	})
	var types []string
	for _, e := range got {
		types = append(types, e.StreamID+" "+e.Type)
	}
	require.Equal(t, []string{"Order-1 OrderPlaced", "Order-1 OrderShipped"}, types, "the tombstone is not an event")
	head, ok, err := r.Head(tb.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, got[1].Cursor, head, "the tombstone is not the head")
	lag, _, err := r.Lag(tb.ctx, got[1].Cursor, store.Filter{})
	require.NoError(t, err)
	require.Zero(t, lag, "nor lag")

	// A message of that type in another stream is an event like any other.
	appendOne("Order-2", "$tombstone")
	testsupport.Until(t, "it is read", time.Minute, func() bool {
		evs, err := r.Read(tb.ctx, got[1].Cursor, store.Filter{}, 10, nil)
		require.NoError(t, err)
		return len(evs) == 1 && evs[0].StreamID == "Order-2"
	})
}
