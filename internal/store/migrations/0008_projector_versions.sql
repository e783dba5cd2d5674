-- A projector is (name, version). Each version has its own checkpoint row
-- (and so its own lock id and epoch): version 1's is the row named after
-- the projector, as before versions existed, so a running deployment
-- upgrades without a rebuild; version N >= 2's is named "name@vN", which no
-- configured name can be. setup_at records that the version's setup ran
-- (once, by its leader, before its first batch); promoted_at that it became
-- the one readers see; retired_at that the retire SQL of the version that
-- replaced it ran, in the same transaction as this record.
CREATE TABLE projectord.projector_versions (
    name          text NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    checkpoint    text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    setup_at      timestamptz,
    promoted_at   timestamptz,
    superseded_at timestamptz,
    retired_at    timestamptz,
    PRIMARY KEY (name, version)
);

-- The live version of each projector: the newest promoted one, or the first
-- that was ever claimed. advance() refuses every version older than it, so
-- from the commit that moves it on no older version commits again.
CREATE TABLE projectord.live_versions (
    name       text PRIMARY KEY,
    version    integer NOT NULL CHECK (version >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Projectors that ran before versions existed are version 1, live.
INSERT INTO projectord.projector_versions (name, version, checkpoint)
    SELECT projector, 1, projector FROM projectord.checkpoints;
INSERT INTO projectord.live_versions (name, version)
    SELECT projector, 1 FROM projectord.checkpoints;

-- advance as in 0007 (fenced by epoch and cursor, refused while paused),
-- and refused for a version older than the live one: PJ001 like any fence,
-- so a binary that predates versions steps down as when deposed, with
-- DETAIL 'superseded', by which this one tells it. The live row is read FOR
-- SHARE: a promotion holds it FOR UPDATE from its start to its commit, so a
-- batch of the older version either takes the share first (and the
-- promotion waits for it to commit: it lands before) or waits for the
-- promotion and then reads the new live version (and is refused). No batch
-- of the old version can land after the promotion.
CREATE OR REPLACE FUNCTION projectord.advance(
    p_projector text, p_epoch bigint,
    p_from_xid xid8, p_from_position bigint,
    p_to_xid xid8, p_to_position bigint,
    p_events bigint
) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_name    text;
    v_version integer;
    v_live    integer;
BEGIN
    SELECT v.name, v.version INTO v_name, v_version
      FROM projectord.projector_versions v WHERE v.checkpoint = p_projector;
    IF FOUND THEN
        SELECT l.version INTO v_live FROM projectord.live_versions l WHERE l.name = v_name FOR SHARE;
        IF v_live > v_version THEN
            RAISE EXCEPTION 'projector % version % is superseded by version %', v_name, v_version, v_live
                USING ERRCODE = 'PJ001', DETAIL = 'superseded';
        END IF;
    END IF;
    UPDATE projectord.checkpoints
       SET last_xid = p_to_xid, last_position = p_to_position,
           events_applied = events_applied + p_events, updated_at = now()
     WHERE projector = p_projector AND epoch = p_epoch
       AND last_xid = p_from_xid AND last_position = p_from_position
       AND paused_at IS NULL;
    IF NOT FOUND THEN
        -- As in 0007: a new statement, so it sees a pause that committed
        -- while the UPDATE waited for the row.
        IF EXISTS (SELECT 1 FROM projectord.checkpoints
                    WHERE projector = p_projector AND epoch = p_epoch AND paused_at IS NOT NULL) THEN
            RAISE EXCEPTION 'projector % is paused', p_projector
                USING ERRCODE = 'PJ002';
        END IF;
        RAISE EXCEPTION 'projector % is fenced (epoch %, cursor %/%)', p_projector, p_epoch, p_from_xid, p_from_position
            USING ERRCODE = 'PJ001';
    END IF;
END
$$;
