-- Our functions run with a fixed search_path, so no object another role
-- placed in a schema on the caller's search_path (public, "$user") can
-- stand in for a function, operator or type they use (CVE-2018-1058).
-- pg_temp goes last: otherwise it is searched first, for relations.
ALTER FUNCTION projectord.advance(text, bigint, xid8, bigint, xid8, bigint, bigint)
    SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION projectord.try_jsonb(text)
    SET search_path = pg_catalog, pg_temp;

-- notify_events exists only where `source prepare --notify` created it.
DO $$
BEGIN
    IF pg_catalog.to_regprocedure('projectord.notify_events()') IS NOT NULL THEN
        ALTER FUNCTION projectord.notify_events() SET search_path = pg_catalog, pg_temp;
    END IF;
END
$$;
