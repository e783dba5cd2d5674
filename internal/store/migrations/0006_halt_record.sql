-- A halt is a fact of the projector, recorded where every replica reads it:
-- who halted it, when, on which event (NULL for a handler that fails for
-- every event alike) and under which sink (a fingerprint of its handlers).
-- A claim by a replica whose sink has the same fingerprint is refused, so
-- no replica runs a halted projector again until an operator resumes it
-- (`projectord resume`, `projectord reset`) or a replica with a changed
-- sink claims it (docs/architecture.md, "Halts").
ALTER TABLE projectord.checkpoints
    ADD COLUMN halted_by       text,
    ADD COLUMN halted_at       timestamptz,
    ADD COLUMN halted_xid      xid8,
    ADD COLUMN halted_position bigint,
    ADD COLUMN halted_sink     text;
