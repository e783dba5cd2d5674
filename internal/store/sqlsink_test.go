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
