-- jwilger/eventcore, eventcore-postgres/migrations/0002_add_metadata_column.sql at 68c38b469b3b8b300cf4ca6400cb9abe8187bce9, verbatim.
-- sqlx applies each migration in a transaction of its own, in file order.

ALTER TABLE eventcore_events
    ADD COLUMN IF NOT EXISTS metadata JSONB NOT NULL DEFAULT '{}'::jsonb;
