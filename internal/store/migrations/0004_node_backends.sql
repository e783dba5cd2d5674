-- The backends of a node's pool connections, written by its coordination
-- session at every heartbeat, so that a standby taking over from a stalled
-- node terminates exactly them, whatever their application_name. A backend
-- is named by pid and backend_start together: a pid alone may by now belong
-- to an unrelated, newer session.
CREATE TYPE projectord.node_backend AS (pid integer, backend_start timestamptz);
ALTER TABLE projectord.nodes ADD COLUMN pool_backends projectord.node_backend[] NOT NULL DEFAULT '{}';
