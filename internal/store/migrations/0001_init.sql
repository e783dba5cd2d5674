-- Stable small ids for advisory locks: pg_advisory_lock(namespace, id) needs
-- no hashing, so two projectors can never collide.
CREATE TABLE projectord.projectors (
    id         serial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per projector. The cursor is (last_xid, last_position); epoch is
-- bumped by every new leader and fences every checkpoint update.
CREATE TABLE projectord.checkpoints (
    projector         text PRIMARY KEY,
    last_xid          xid8 NOT NULL DEFAULT '0',
    last_position     bigint NOT NULL DEFAULT 0,
    epoch             bigint NOT NULL DEFAULT 0,
    leader_node       text,
    leader_since      timestamptz,
    status            text NOT NULL DEFAULT 'idle',
    last_error        text,
    last_error_at     timestamptz,
    events_applied    bigint NOT NULL DEFAULT 0,
    system_identifier bigint,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projectord.nodes (
    node_id      text PRIMARY KEY,
    hostname     text NOT NULL,
    backend_pid  integer,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projectord.dead_letters (
    id         bigserial PRIMARY KEY,
    projector  text NOT NULL,
    xid        xid8 NOT NULL,
    position   bigint NOT NULL,
    stream_id  text,
    event_type text,
    payload    jsonb,
    metadata   jsonb,
    error      text NOT NULL,
    attempts   integer NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_projector_idx ON projectord.dead_letters (projector, failed_at);

-- advance moves a checkpoint, fenced by the leader's epoch and the cursor it
-- expects. It raises PJ001 when fenced, so a pipelined batch (one implicit
-- transaction) aborts as a whole: the sink's writes and the checkpoint commit
-- together or not at all.
CREATE FUNCTION projectord.advance(
    p_projector text, p_epoch bigint,
    p_from_xid xid8, p_from_position bigint,
    p_to_xid xid8, p_to_position bigint,
    p_events bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE projectord.checkpoints
       SET last_xid = p_to_xid, last_position = p_to_position,
           events_applied = events_applied + p_events, updated_at = now()
     WHERE projector = p_projector AND epoch = p_epoch
       AND last_xid = p_from_xid AND last_position = p_from_position;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'projector % is fenced (epoch %, cursor %/%)', p_projector, p_epoch, p_from_xid, p_from_position
            USING ERRCODE = 'PJ001';
    END IF;
END
$$;
