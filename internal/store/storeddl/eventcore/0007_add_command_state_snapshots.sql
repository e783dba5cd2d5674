-- jwilger/eventcore, eventcore-postgres/migrations/0007_add_command_state_snapshots.sql at 68c38b469b3b8b300cf4ca6400cb9abe8187bce9, verbatim.
-- sqlx applies each migration in a transaction of its own, in file order.

CREATE TABLE IF NOT EXISTS eventcore_command_state_snapshots (
    snapshot_id TEXT PRIMARY KEY,
    state JSONB NOT NULL,
    stream_versions JSONB NOT NULL,
    replay_checkpoints JSONB NOT NULL DEFAULT '[]'::jsonb,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CHECK (jsonb_typeof(stream_versions) = 'object'),
    CHECK (jsonb_typeof(replay_checkpoints) = 'array')
);
