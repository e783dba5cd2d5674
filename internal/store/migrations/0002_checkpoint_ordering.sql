-- A cursor means something only under the source.ordering that wrote it, so
-- the checkpoint records that ordering; a claim under another ordering
-- converts the cursor exactly or refuses (see docs/architecture.md). NULL is
-- a checkpoint at the start (0/0, no floor), which fits either ordering.
ALTER TABLE projectord.checkpoints
    ADD COLUMN ordering text CHECK (ordering IN ('xid8', 'position'));

-- position_floor: every event at or below this position is done, whatever
-- its xid. It is how a position checkpoint becomes an xid8 one exactly: the
-- xid8 reader also reads only positions above it.
ALTER TABLE projectord.checkpoints
    ADD COLUMN position_floor bigint NOT NULL DEFAULT 0;

-- Checkpoints written before this column existed: a real xid can only come
-- from xid8 ordering; xid 0 with a position only from position ordering.
UPDATE projectord.checkpoints
   SET ordering = CASE WHEN last_xid <> '0' THEN 'xid8' WHEN last_position <> 0 THEN 'position' END;
