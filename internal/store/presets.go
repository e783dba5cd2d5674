package store

import (
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Preset is what projectord knows about one event store's table: where
// the store keeps it, which column holds each event field, which rows the
// store's own readers read, and what `source prepare` must add. Naming the
// preset (source.preset) is all the mapping a user writes; every
// source.columns key and source.table still overrides it.
//
// Each preset cites the schema it was written against; docs/sources.md
// says per store what prepare adds and what the store's writers keep doing.
type Preset struct {
	// Table is the store's default table (source.table when unset).
	Table string
	// Columns maps event fields to the table's columns (or to Virtual
	// columns).
	Columns Columns
	// Rows, when set, is an SQL condition on the table's columns (aliased
	// t; {schema} is the table's quoted schema): the rows the store's own
	// readers read. Every read, head and lag query sees only those rows,
	// so a row it leaves out is neither applied nor counted as lag.
	Rows string
	// Virtual columns are computed per row, name to SQL expression over
	// the table (aliased t; {schema} is the table's quoted schema), with
	// their type: a stream name kept in another table, metadata assembled
	// from several columns. They are mapped like real columns.
	Virtual []VirtualColumn
	// AddsPosition: the store has no numeric global position; `source
	// prepare` adds Columns.Position as an identity column.
	AddsPosition bool
	// PositionOrder is the column whose order is the store's own order of
	// its events, which the identity numbers existing rows in (through an
	// index on it, by CLUSTER): the table's physical order is not it once
	// VACUUM has let new rows into space freed by old ones.
	PositionOrder string
	// CursorIndex is the name the store's own later migrations give the
	// (transaction_id, position) index on its default table. Prepare
	// creates the index under that name, so that such a migration (CREATE
	// INDEX IF NOT EXISTS) finds it rather than building a second one
	// under a lock that stops the store's writers for the whole build.
	CursorIndex string
	// Refuse lists layouts of the store projectord cannot read correctly:
	// each query, given the table's oid as $1, returns true for such a
	// layout, and Inspect fails with the message.
	Refuse []Refusal
}

// Refusal is a store layout a preset refuses, with why.
type Refusal struct {
	Query   string
	Message string
}

// VirtualColumn is a computed column of a preset's read relation.
type VirtualColumn struct {
	Name    string
	Expr    string
	Type    string // as format_type() spells it
	NotNull bool
}

// Presets are the event stores projectord reads without a hand-written
// mapping. Treat as read-only.
var Presets = map[string]Preset{
	// native is the layout NativeTableSQL creates and the one the design's
	// gap-safe reader is written against.
	"native": {Table: "public.events", Columns: NativeColumns},

	// emmett: Emmett's emt_messages (event-driven-io/emmett,
	// src/packages/emmett-postgresql/src/eventStore/schema/migrations/
	// 0_42_0/0_42_0.snapshot.ts at 6e308790), list-partitioned by partition
	// and nested by is_archived. It already has transaction_id xid8.
	// Emmett's own reader (readMessagesBatch.ts) reads partition
	// 'emt:default' and is_archived = FALSE; of those, projections read
	// events (message_kind 'E'), not commands. Emmett 0.42.4 and 0.43
	// add the cursor index themselves, non-concurrently, as
	// idx_messages_transaction_id_global_position
	// (migrations/0_42_4/index.ts at dc0b5ac1, 0_43_0 at 6e308790).
	"emmett": {
		Table:       "public.emt_messages",
		CursorIndex: "idx_messages_transaction_id_global_position",
		Columns: Columns{
			Position: "global_position", TransactionID: "transaction_id", StreamID: "stream_id",
			StreamVersion: "stream_position", EventType: "message_type", Data: "message_data",
			Metadata: "message_metadata", CreatedAt: "created", EventID: "message_id",
		},
		Rows: "partition = 'emt:default' AND is_archived = FALSE AND message_kind = 'E'",
	},

	// messagedb: Message DB's message_store.messages (message-db/message-db,
	// database/tables/messages.sql at 25da82b0). time is a timestamp
	// without time zone holding UTC; position is the stream version.
	"messagedb": {
		Table: "message_store.messages",
		Columns: Columns{
			Position: "global_position", TransactionID: "transaction_id", StreamID: "stream_name",
			StreamVersion: "position", EventType: "type", Data: "data",
			Metadata: "metadata", CreatedAt: "time", EventID: "id",
		},
	},

	// marten: Marten's mt_events (JasperFx/marten,
	// src/Marten/Events/Schema/EventsTable.cs at c921fa5d). seq_id is the
	// global sequence; stream_id is uuid or text by the stream identity;
	// archived events are skipped as Marten's own daemon skips them. The
	// tenant travels in metadata.
	"marten": {
		Table: "public.mt_events",
		Columns: Columns{
			Position: "seq_id", TransactionID: "transaction_id", StreamID: "stream_id",
			StreamVersion: "version", EventType: "type", Data: "data",
			Metadata: "projectord_metadata", CreatedAt: "timestamp", EventID: "id",
		},
		Rows: "is_archived = FALSE",
		Refuse: []Refusal{{
			// UseTenantPartitionedEvents: a sequence per tenant, so seq_id
			// repeats across tenants, and one transaction can write two
			// tenants' events with one (xid, seq_id): one would be skipped.
			// Marten then puts tenant_id in the primary key and partitions
			// by it.
			Query: `SELECT EXISTS (SELECT FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
					WHERE i.indrelid = $1 AND i.indisprimary AND a.attname = 'tenant_id')
				OR EXISTS (SELECT FROM pg_catalog.pg_partitioned_table p JOIN pg_catalog.pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = ANY (p.partattrs)
					WHERE p.partrelid = $1 AND a.attname = 'tenant_id')`,
			Message: "mt_events is partitioned by tenant (Marten's UseTenantPartitionedEvents): seq_id is then a sequence per tenant and repeats across tenants, " +
				"so it cannot order one stream of events; projectord cannot read this layout",
		}},
		Virtual: []VirtualColumn{{
			Name: "projectord_metadata", Expr: "jsonb_build_object('tenant_id', t.tenant_id)", Type: "jsonb", NotNull: true,
		}},
	},

	// eventcore: eventcore_events of jwilger/eventcore's eventcore-postgres
	// (migrations/0001_create_events_table.sql to 0005 at 68c38b46): a
	// uuid v7 event_id and no global sequence; triggers forbid UPDATE and
	// DELETE. `source prepare` adds global_position and transaction_id,
	// filled by defaults for new rows; existing rows get theirs when the
	// column is added (a table rewrite, which fires no trigger).
	"eventcore": {
		Table: "public.eventcore_events",
		Columns: Columns{
			Position: "global_position", TransactionID: "transaction_id", StreamID: "stream_id",
			StreamVersion: "stream_version", EventType: "event_type", Data: "event_data",
			Metadata: "metadata", CreatedAt: "created_at", EventID: "event_id",
		},
		AddsPosition: true,
		// eventcore's own subscriptions order and checkpoint by event_id
		// (uuid v7, migrations/0006: last_position UUID).
		PositionOrder: "event_id",
	},

	// eventuous: Eventuous' PostgreSQL messages with stream names in
	// streams (Eventuous/eventuous,
	// src/Postgres/src/Eventuous.Postgresql/Scripts/1_Schema.sql at
	// b2c610f2), in the schema eventuous by default. created is a
	// timestamp without time zone holding UTC. Later Eventuous
	// subscriptions fill a gap in global_position that outlives their
	// timeout with a '$tombstone' message in stream '__tombstones__'
	// (Scripts/9_TryInsertTombstone.sql at 83b3dddc), and skip those
	// messages when they read (PostgresSubscriptionBase.ShouldSkipEvent):
	// so does the preset. Without a tombstone stream the subquery is NULL
	// and IS DISTINCT FROM keeps every row.
	"eventuous": {
		Table: "eventuous.messages",
		Columns: Columns{
			Position: "global_position", TransactionID: "transaction_id", StreamID: "projectord_stream_name",
			StreamVersion: "stream_position", EventType: "message_type", Data: "json_data",
			Metadata: "json_metadata", CreatedAt: "created", EventID: "message_id",
		},
		Rows: "(message_type <> '$tombstone' OR stream_id IS DISTINCT FROM " +
			"(SELECT s.stream_id FROM {schema}.streams s WHERE s.stream_name = '__tombstones__'))",
		Virtual: []VirtualColumn{{
			Name: "projectord_stream_name", Type: "text", NotNull: true,
			Expr: "(SELECT s.stream_name::text FROM {schema}.streams s WHERE s.stream_id = t.stream_id)",
		}},
	},
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for n := range Presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// preset is the source's preset; the zero Preset (no rules) when it names
// none or an unknown one.
func (s Source) preset() Preset { return Presets[s.Preset] }

// readFrom is the relation every read, head and lag query selects from:
// the table itself, or, when the preset restricts rows or computes
// columns, a subquery over it that PostgreSQL flattens into the outer
// query (no aggregate, limit or volatile function in it), so the cursor
// index still serves the ORDER BY ... LIMIT.
func (s Source) readFrom() string {
	p := s.preset()
	if p.Rows == "" && len(p.Virtual) == 0 {
		return s.sqlTable()
	}
	var b strings.Builder
	b.WriteString("(SELECT t.*")
	for _, v := range p.Virtual {
		b.WriteString(", ")
		b.WriteString(strings.ReplaceAll(v.Expr, "{schema}", s.quotedSchema()))
		b.WriteString(" AS ")
		b.WriteString(quoteCol(v.Name))
	}
	b.WriteString(" FROM ")
	b.WriteString(s.sqlTable())
	b.WriteString(" t")
	if p.Rows != "" {
		b.WriteString(" WHERE ")
		b.WriteString(strings.ReplaceAll(p.Rows, "{schema}", s.quotedSchema()))
	}
	b.WriteString(") AS t")
	return b.String()
}

// quotedSchema is the resolved table's schema, quoted; before Resolve, the
// configured schema (public when the name has none).
func (s Source) quotedSchema() string {
	if s.Resolved() {
		return pgx.Identifier{s.schema}.Sanitize()
	}
	if i := strings.LastIndexByte(s.Table, '.'); i >= 0 {
		return quoteTable(s.Table[:i])
	}
	return pgx.Identifier{"public"}.Sanitize()
}
