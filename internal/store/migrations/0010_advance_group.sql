-- advance() for every member of a group at once (internal/store,
-- groupcommit.go): one statement moves the checkpoints of a group's
-- batches instead of one call per batch. The rules are advance()'s (0008):
-- each member's live version is held FOR SHARE to the commit and a member
-- of an older version is refused; a checkpoint moves only under its epoch,
-- from its cursor, while not paused. It refuses the whole group when one
-- member would be refused, with SQLSTATE PJ003 and the member's place in
-- the arrays (1-based) as DETAIL: the group's transaction then rolls back,
-- that member commits alone (where advance() says why), and the others
-- form a group again. The arrays are parallel; a projector appears at
-- most once (a projector named twice, or an array shorter than
-- p_projectors, leaves a member unmoved, which is refused the same way).
CREATE FUNCTION projectord.advance_group(
    p_projectors text[], p_epochs bigint[],
    p_from_xids xid8[], p_from_positions bigint[],
    p_to_xids xid8[], p_to_positions bigint[],
    p_events bigint[]
) RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_member bigint;
    v_moved  bigint[];
BEGIN
    -- The block catches a lock wait cut short by the group's lock_timeout
    -- (55P03), which names no row, to find whose row it was: with one
    -- advance() per batch that member's own statement failed and it alone
    -- was sent to commit by itself; here the whole statement fails, and
    -- without a name every batch of the group would. A block is a
    -- subtransaction: one per group, not one per batch.
    BEGIN
        -- The live rows first, in one order, each held FOR SHARE as
        -- advance() holds its own: a promotion holding one FOR UPDATE is
        -- waited for.
        PERFORM 1 FROM projectord.live_versions l
          WHERE l.name IN (SELECT v.name FROM projectord.projector_versions v
                            WHERE v.checkpoint = ANY (p_projectors))
          ORDER BY l.name
          FOR SHARE;
        -- A new statement, so it sees a promotion that committed while the
        -- lock above waited for it.
        SELECT m.ord INTO v_member
          FROM unnest(p_projectors) WITH ORDINALITY AS m(checkpoint, ord)
          JOIN projectord.projector_versions v ON v.checkpoint = m.checkpoint
          JOIN projectord.live_versions l ON l.name = v.name
         WHERE l.version > v.version
         ORDER BY m.ord
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'group member % (projector %) is superseded', v_member, p_projectors[v_member]
                USING ERRCODE = 'PJ003', DETAIL = v_member::text;
        END IF;
        WITH moved AS (
            UPDATE projectord.checkpoints c
               SET last_xid = m.to_xid, last_position = m.to_position,
                   events_applied = c.events_applied + m.events, updated_at = now()
              FROM unnest(p_projectors, p_epochs, p_from_xids, p_from_positions,
                          p_to_xids, p_to_positions, p_events)
                   WITH ORDINALITY AS m(projector, epoch, from_xid, from_position,
                                        to_xid, to_position, events, ord)
             WHERE c.projector = m.projector AND c.epoch = m.epoch
               AND c.last_xid = m.from_xid AND c.last_position = m.from_position
               AND c.paused_at IS NULL
            RETURNING m.ord
        )
        SELECT array_agg(ord) INTO v_moved FROM moved;
    EXCEPTION WHEN lock_not_available THEN
        -- Everything the block did is undone, its locks released.
        -- Whichever member's live row or checkpoint row another
        -- transaction holds now is named (the first, by place); if none is
        -- held any more, the wait names nobody. A waiter that queued
        -- behind the group for a row the rollback just released can take
        -- it first and get its member named instead of the one waited for:
        -- that member then commits alone and the others try again.
        -- One statement, no subtransaction per member: a probe block
        -- each would take an XID per free member (and overflow the
        -- backend's subtransaction cache past 64).
        SELECT min(m.ord) INTO v_member
          FROM unnest(p_projectors) WITH ORDINALITY AS m(checkpoint, ord)
         WHERE (EXISTS (SELECT 1 FROM projectord.checkpoints c WHERE c.projector = m.checkpoint)
                AND NOT EXISTS (SELECT 1 FROM projectord.checkpoints c WHERE c.projector = m.checkpoint
                                   FOR NO KEY UPDATE SKIP LOCKED))
            OR (EXISTS (SELECT 1 FROM projectord.projector_versions v
                          JOIN projectord.live_versions l ON l.name = v.name
                         WHERE v.checkpoint = m.checkpoint)
                AND NOT EXISTS (SELECT 1 FROM projectord.projector_versions v
                                  JOIN projectord.live_versions l ON l.name = v.name
                                 WHERE v.checkpoint = m.checkpoint
                                   FOR SHARE OF l SKIP LOCKED));
        IF v_member IS NULL THEN
            RAISE;
        END IF;
        RAISE EXCEPTION 'group member % (projector %) waited too long for a lock', v_member, p_projectors[v_member]
            USING ERRCODE = 'PJ003', DETAIL = v_member::text;
    END;
    SELECT min(o) INTO v_member
      FROM generate_subscripts(p_projectors, 1) AS o
     WHERE v_moved IS NULL OR o <> ALL (v_moved);
    IF v_member IS NOT NULL THEN
        RAISE EXCEPTION 'group member % (projector %) is fenced or paused', v_member, p_projectors[v_member]
            USING ERRCODE = 'PJ003', DETAIL = v_member::text;
    END IF;
END
$$;
