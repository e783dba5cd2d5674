-- jwilger/eventcore, eventcore-postgres/migrations/0006_add_subscription_versions.sql at 68c38b469b3b8b300cf4ca6400cb9abe8187bce9, verbatim.
-- sqlx applies each migration in a transaction of its own, in file order.

-- Checkpoint positions for event subscriptions/projectors per ADR-026
CREATE TABLE IF NOT EXISTS eventcore_subscription_versions (
    subscription_name TEXT PRIMARY KEY,
    last_position UUID NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE INDEX IF NOT EXISTS eventcore_subscription_versions_updated_at_idx
    ON eventcore_subscription_versions (updated_at);

COMMENT ON TABLE eventcore_subscription_versions IS 'Tracks checkpoint positions for event subscriptions/projectors per ADR-026';
