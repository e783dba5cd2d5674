-- A dead letter keeps everything needed to replay its event. payload and
-- metadata are jsonb and cannot hold a source row's data that is not JSON
-- (or that jsonb rejects, such as \u0000): that text goes to the *_raw
-- columns instead, so a bad row is dead-lettered with its raw values.
ALTER TABLE projectord.dead_letters
    ADD COLUMN stream_version bigint,
    ADD COLUMN created_at     timestamptz,
    ADD COLUMN payload_raw    text,
    ADD COLUMN metadata_raw   text;

-- try_jsonb is t as jsonb, or NULL when it is not valid jsonb: recording a
-- dead letter must never fail on the event's own values, or the poison
-- event it records would wedge the projector.
CREATE FUNCTION projectord.try_jsonb(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN data_exception THEN
    RETURN NULL;
END
$$;
