package store

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCompileHandlerRewritesOnlyParameters(t *testing.T) {
	t.Parallel()
	cases := []struct{ in, want string }{
		{`INSERT INTO t (id) VALUES (@data->>'id')`, `INSERT INTO t (id) VALUES (($1::jsonb)->>'id')`},
		{`UPDATE t SET n = @position WHERE id = @stream_id AND p = @position`,
			`UPDATE t SET n = ($1::bigint) WHERE id = ($2::text) AND p = ($1::bigint)`},
		{`SELECT '@data', "@data", $$@data$$, E'\'@data' -- @data
			, @metadata /* @data */`, `SELECT '@data', "@data", $$@data$$, E'\'@data' -- @data
			, ($1::jsonb) /* @data */`},
		{`SELECT 1 WHERE '{"a":1}'::jsonb @> @data AND x @@ y`, `SELECT 1 WHERE '{"a":1}'::jsonb @> ($1::jsonb) AND x @@ y`},
		{`INSERT INTO t VALUES (@event_id, @created_at, @transaction_id);`, `INSERT INTO t VALUES (($1::text), ($2::timestamptz), ($3::xid8))`},
	}
	for _, c := range cases {
		st, err := compileHandler(c.in)
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, st.sql)
	}
}

func TestCompileHandlerRejects(t *testing.T) {
	t.Parallel()
	for in, msg := range map[string]string{
		`INSERT INTO t VALUES (@nope)`:     "unknown parameter @nope",
		`COMMIT`:                           "not allowed",
		`  begin; insert into t values(1)`: "not allowed",
		"/* c */ COMMIT":                   "not allowed",
		"-- c\nROLLBACK":                   "not allowed",
		`SELECT 1; SELECT 2`:               "one statement",
		`   `:                              "empty",
	} {
		_, err := compileHandler(in)
		require.ErrorContains(t, err, msg, in)
	}
	_, err := CompileSQLSink(map[string]string{"A": "SELECT @x", "B": "SELECT 1"}, "")
	require.ErrorContains(t, err, "handlers[A]")
}

func TestCompileHandlerRefusesTransactionControlAnywhere(t *testing.T) {
	t.Parallel()
	for in, msg := range map[string]string{
		// PostgreSQL ends a -- comment at a carriage return too.
		"-- c\rCOMMIT":                                                                 `"COMMIT" statements are not allowed`,
		"/* a /* nested */ c */ END":                                                   `"END" statements are not allowed`,
		"-- c\n/* d */ -- e\r\n ABORT":                                                 `"ABORT" statements are not allowed`,
		`DO $$ BEGIN INSERT INTO t VALUES (1); COMMIT; END $$`:                         "a DO block may not COMMIT",
		`do $body$ begin perform 1; rollback; end $body$`:                              "a DO block may not ROLLBACK",
		`DO LANGUAGE plpgsql 'BEGIN RAISE NOTICE ''x''; COMMIT; END'`:                  "a DO block may not COMMIT",
		`/* c */ DO E'BEGIN RAISE NOTICE \'x\'; Commit; END'`:                          "a DO block may not COMMIT",
		"DO $$ BEGIN -- ok\r COMMIT; END $$":                                           "a DO block may not COMMIT",
		`DO $$ BEGIN IF true THEN ROLLBACK AND CHAIN; END IF; END $$ LANGUAGE plpgsql`: "a DO block may not ROLLBACK",
	} {
		_, err := compileHandler(in)
		require.ErrorContains(t, err, msg, in)
		require.ErrorContains(t, err, "the batch's transaction is projectord's", in)
	}
	// The words alone, in text or comments, are no transaction control;
	// CALL stays allowed (a procedure that commits fails when it runs).
	for _, in := range []string{
		`INSERT INTO log (msg) VALUES ('COMMIT') -- ROLLBACK`,
		`DO $$ BEGIN RAISE NOTICE 'commit %', 'rollback'; /* COMMIT */ -- ROLLBACK
		END $$`,
		`DO $$ BEGIN INSERT INTO commits (commit_id) VALUES (1); END $$`,
		`CALL record_event(@position, @data)`,
		`UPDATE t SET state = 'end' WHERE id = @stream_id`,
	} {
		_, err := compileHandler(in)
		require.NoError(t, err, in)
	}
	_, err := compileHandler("SELECT 1 -- c\r; COMMIT")
	require.ErrorContains(t, err, "one statement per handler")
	_, err = CompileSQLSink(map[string]string{"A": "SELECT 1", "B": "DO $$BEGIN COMMIT; END$$"}, "")
	require.ErrorContains(t, err, "handlers[B]: a DO block may not COMMIT")
}
