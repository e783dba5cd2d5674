-- Marten's event store schema for StreamIdentity.AsGuid (uuid stream ids, Marten's default) and TenancyStyle.Single (the default); otherwise
-- Marten 9's defaults: EnableBigIntEvents, AppendMode QuickWithServerTimestamps,
-- no metadata columns, no archived-stream or tenant partitioning, schema public.
--
-- Marten ships no SQL for it: Weasel generates the DDL at run time from
-- Marten's table and function classes. This is that output, written out:
--   JasperFx/marten at c921fa5dfdf7d540b5fe85d833831080c07c94d6
--     src/Marten/Events/Schema/StreamsTable.cs          (mt_streams)
--     src/Marten/Events/Schema/EventsTable.cs           (mt_events, its FK and unique index)
--     src/Marten/Events/EventGraph.FeatureSchema.cs     (mt_events_sequence, owned by seq_id)
--     src/Marten/Events/Schema/QuickAppendEventFunction.cs (mt_quick_append_events, the append path)
--     src/Marten/Events/Archiving/ArchiveStreamFunction.cs (mt_archive_stream, writeSimple)
--   as emitted by Weasel.Postgresql 9.25.1 (the version Marten pins in
--   Directory.Packages.props), JasperFx/weasel at 062b2506abd1f9bb54800b8fac92aed1b04490a0:
--     src/Weasel.Postgresql/Tables/Table.cs (WriteCreateStatement, Pretty formatting),
--     TableColumn.cs (Declaration), ForeignKey.cs (WriteAddStatement),
--     IndexDefinition.cs (ToDDL), src/Weasel.Postgresql/Sequence.cs.
-- The function bodies are the C# templates with their interpolations
-- resolved for this configuration and nothing else changed. Marten's other
-- event objects (mt_event_progression and its functions) are left out:
-- nothing here reads or writes them.
--
-- Note Weasel's DEFAULT '(now())' on mt_events.timestamp (DefaultValueByString):
-- a literal, so PostgreSQL fixes the default at CREATE TABLE time. Marten's
-- appends always pass the timestamp, so it never applies to them.

CREATE TABLE IF NOT EXISTS public.mt_streams (
    id             uuid           NOT NULL,
    type           varchar        NULL,
    version        bigint         NULL,
    timestamp      timestamptz    NOT NULL DEFAULT (now()),
    created        timestamptz    NOT NULL DEFAULT (now()),
    tenant_id      varchar        NULL DEFAULT '*DEFAULT*',
    is_archived    bool           NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_streams_id PRIMARY KEY (id)
);

CREATE TABLE IF NOT EXISTS public.mt_events (
    seq_id            bigint                      NOT NULL,
    id                uuid                        NOT NULL,
    stream_id         uuid                        NULL,
    version           bigint                      NOT NULL,
    data              jsonb                       NOT NULL,
    bdata             bytea                       NULL,
    type              varchar(500)                NOT NULL,
    timestamp         timestamp with time zone    NOT NULL DEFAULT '(now())',
    tenant_id         varchar                     NULL DEFAULT '*DEFAULT*',
    mt_dotnet_type    varchar                     NULL,
    is_archived       bool                        NULL DEFAULT FALSE,
CONSTRAINT pkey_mt_events_seq_id PRIMARY KEY (seq_id)
);

ALTER TABLE public.mt_events
ADD CONSTRAINT fkey_mt_events_stream_id FOREIGN KEY(stream_id)
REFERENCES public.mt_streams(id)ON DELETE CASCADE
;

CREATE UNIQUE INDEX pk_mt_events_stream_and_version ON public.mt_events USING btree (stream_id, version);

CREATE SEQUENCE public.mt_events_sequence;
ALTER SEQUENCE public.mt_events_sequence OWNED BY public.mt_events.seq_id;

CREATE OR REPLACE FUNCTION public.mt_quick_append_events(stream uuid, stream_type varchar, tenantid varchar, event_ids uuid[], event_types varchar[], dotnet_types varchar[], bodies jsonb[], bdatas bytea[], timestamps timestamp with time zone[], expected_version bigint DEFAULT NULL::bigint) RETURNS bigint[] AS $$
DECLARE
	event_version bigint;
	stream_is_archived boolean;
	event_type varchar;
	event_id uuid;
	body jsonb;
	index int;
	seq bigint;
    actual_tenant varchar;
	return_value bigint[];
BEGIN
    if expected_version IS NOT NULL then
        -- COALESCE turns the NULL we get for a brand-new stream into 0, so a
        -- FetchForWriting against a non-existent stream (which sets
        -- ExpectedVersionOnServer = 0) and a StartStream(id, version: 0) both
        -- land on the new-stream branch instead of mis-firing the guard.
        select version, is_archived into event_version, stream_is_archived from public.mt_streams where id = stream;
        if COALESCE(event_version, 0) != expected_version then
            RAISE EXCEPTION 'Stream version mismatch on ''%'': expected %, actual %', stream, expected_version, COALESCE(event_version, 0) USING ERRCODE = 'MT003';
        end if;
    else
        select version, is_archived into event_version, stream_is_archived from public.mt_streams where id = stream;
    end if;
	if event_version IS NULL then
		event_version = 0;
		insert into public.mt_streams (id, type, version, timestamp, tenant_id) values (stream, stream_type, 0, now(), tenantid);
    else
        if stream_is_archived then
            RAISE EXCEPTION 'Attempted to append event to archived stream with Id ''%''.', stream USING ERRCODE = 'MT001';
        end if;
        if tenantid IS NOT NULL then
            select tenant_id into actual_tenant from public.mt_streams where id = stream;
            if actual_tenant != tenantid then
                RAISE EXCEPTION 'The tenantid does not match the existing stream';
            end if;
        end if;
	end if;

	index := 1;
	-- #5062: array_length('{}', 1) is NULL in PostgreSQL, not 0, so a call with an
	-- empty event array used to return ARRAY[NULL] -- a bigint[] whose only element
	-- is NULL, which Npgsql cannot read into long[] ('Cannot read a non-nullable
	-- collection of elements because the returned array contains nulls'). COALESCE
	-- makes the empty case mean what it says: zero events appended, so the final
	-- version is the stream's current version.
	return_value := ARRAY[event_version + COALESCE(array_length(event_ids, 1), 0)];

	foreach event_id in ARRAY event_ids
	loop
        seq := nextval('public.mt_events_sequence');
		return_value := array_append(return_value, seq);

	    event_version := event_version + 1;
		event_type = event_types[index];
		body = bodies[index];

		-- #4515 / #4578 / Phase 2: bdatas[index] carries the binary payload
		-- for events opted in to binary serialization (NULL otherwise).
		-- bodies[index] is the {} JSON placeholder for those events so the
		-- existing data jsonb NOT NULL constraint stays intact.
		insert into public.mt_events
			(seq_id, id, stream_id, version, data, bdata, type, tenant_id, timestamp, mt_dotnet_type, is_archived)
		values
			(seq, event_id, stream, event_version, body, bdatas[index], event_type, tenantid, timestamps[index], dotnet_types[index], FALSE);

		index := index + 1;
	end loop;

	update public.mt_streams set version = event_version, timestamp = now() where id = stream;

	return return_value;
END
$$ LANGUAGE plpgsql;


CREATE OR REPLACE FUNCTION public.mt_archive_stream(streamid uuid) RETURNS VOID LANGUAGE plpgsql AS
$function$
BEGIN
  update public.mt_streams set is_archived = TRUE where id = streamid ;
  update public.mt_events set is_archived = TRUE where stream_id = streamid ;
END;
$function$;

