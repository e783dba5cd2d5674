-- A pause is a fact of the projector, recorded where every replica reads
-- it, so it holds across restarts and failovers until `projectord resume`.
-- status is 'paused' meanwhile (for status, metrics and alerts); paused_at
-- is the fact itself, which claims and status writes keep.
ALTER TABLE projectord.checkpoints
    ADD COLUMN paused_by text,
    ADD COLUMN paused_at timestamptz;

-- A retry of a dead letter is requested here by `projectord dead-letters
-- retry` and carried out by the projector's leader, in its fenced
-- transaction, which deletes the row when the event applies. event_id is
-- kept so that handlers using @event_id see the same value on a retry.
-- source_problems says why the source row could not be decoded (a NULL or
-- undecodable column); a retry refuses such a row, as the live path does.
ALTER TABLE projectord.dead_letters
    ADD COLUMN event_id           text,
    ADD COLUMN source_problems    text,
    ADD COLUMN retry_requested_at timestamptz,
    ADD COLUMN retried_at         timestamptz;
CREATE INDEX dead_letters_retry_idx ON projectord.dead_letters (projector, xid, position)
    WHERE retry_requested_at IS NOT NULL;
-- One dead letter per event of a projector: the live path writes one as it
-- moves the checkpoint past the event, a reset deletes them with the
-- checkpoint, so a second row for an event can only be an error, and would
-- let one retry apply the event twice.
CREATE UNIQUE INDEX dead_letters_event_key ON projectord.dead_letters (projector, xid, position);

-- What became of a retried dead letter whose row is gone: the leader
-- records 'applied' as it deletes the row, so `dead-letters retry` tells an
-- applied event from one discarded (or cleared by a reset) meanwhile, whose
-- row is gone too. Rows older than a week are pruned by the next request.
CREATE TABLE projectord.dead_letter_retries (
    dead_letter_id bigint PRIMARY KEY,
    projector      text NOT NULL,
    outcome        text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);

-- advance refuses a paused projector (PJ002) as it refuses a deposed
-- leader (PJ001): the pause's UPDATE and this one take the same row lock,
-- so a batch either committed before `projectord pause` returned or is
-- rolled back, whole, after it. Nothing commits while paused.
CREATE OR REPLACE FUNCTION projectord.advance(
    p_projector text, p_epoch bigint,
    p_from_xid xid8, p_from_position bigint,
    p_to_xid xid8, p_to_position bigint,
    p_events bigint
) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE projectord.checkpoints
       SET last_xid = p_to_xid, last_position = p_to_position,
           events_applied = events_applied + p_events, updated_at = now()
     WHERE projector = p_projector AND epoch = p_epoch
       AND last_xid = p_from_xid AND last_position = p_from_position
       AND paused_at IS NULL;
    IF NOT FOUND THEN
        -- A new statement, so it sees a pause that committed while the
        -- UPDATE waited for the row.
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
