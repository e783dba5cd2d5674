-- The batch an HTTP projector's leader is delivering (or last delivered),
-- recorded before the POST and fenced like a checkpoint move. A new leader
-- whose checkpoint is still at from_* bounds its first batch to last_*, so
-- a batch the receiver may have acknowledged comes again whole, with the
-- same webhook-id (docs/architecture.md, "HTTP sink").
CREATE TABLE projectord.http_deliveries (
    projector     text PRIMARY KEY,
    epoch         bigint NOT NULL,
    from_xid      xid8 NOT NULL,
    from_position bigint NOT NULL,
    last_xid      xid8 NOT NULL,
    last_position bigint NOT NULL,
    events        integer NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- How many times the projector was reset (Target.Reset): an HTTP
-- projector's webhook-ids and resetgeneration attribute carry it, so a
-- receiver deduplicating by id still applies the replay after a reset.
ALTER TABLE projectord.checkpoints ADD COLUMN resets bigint NOT NULL DEFAULT 0;
