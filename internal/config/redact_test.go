package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRedactURL(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct{ in, want string }{
		{"postgres://u:secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgresql://u:secret@h:5432/db?sslmode=require", "postgresql://u:xxxxx@h:5432/db?sslmode=require"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgres://h/db", "postgres://h/db"},
		{"postgres://u:@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:s%40cret@h1:5432,h2:5433/db", "postgres://u:xxxxx@h1:5432,h2:5433/db"},
		{"postgres://u:secret@[::1]:5432/db", "postgres://u:xxxxx@[::1]:5432/db"},
		{"postgres://h/db?password=secret&sslmode=require", "postgres://h/db?password=xxxxx&sslmode=require"},
		{"postgres://h/db?sslmode=require&sslpassword=secret", "postgres://h/db?sslmode=require&sslpassword=xxxxx"},
		{"postgres://h/db?pass%77ord=secret", "postgres://h/db?pass%77ord=xxxxx"},
		{"postgres://h/db?PASSWORD=secret", "postgres://h/db?PASSWORD=xxxxx"},
		// Malformed: the password's "/" or "?" strands its "@".
		{"postgres://u:sec/ret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:12/secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:12?secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u:se#cret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://a@u:sec:ret@h/db", "postgres://a@u:xxxxx@h/db"},
		{"postgres://u:secret@h:notaport/db", "postgres://u:xxxxx@h:notaport/db"},
		{"postgres://u:pw@h/db?password=sec@ret", "postgres://u:xxxxx"},
		// Keyword/value.
		{"host=h user=u password=secret dbname=db", "host=h user=u password=xxxxx dbname=db"},
		{"password=secret host=h", "password=xxxxx host=h"},
		{"host=h password = 'se cret' dbname=db", "host=h password = xxxxx dbname=db"},
		{`host=h password='it\'s secret' dbname=db`, "host=h password=xxxxx dbname=db"},
		{`host=h password=sec\ ret dbname=db`, "host=h password=xxxxx dbname=db"},
		{"host=h password='unterminated secret", "host=h password=xxxxx"},
		{"host=h\tsslpassword=secret", "host=h\tsslpassword=xxxxx"},
		{"host=h dbname=db", "host=h dbname=db"},
		{"", ""},
	} {
		require.Equal(t, tc.want, RedactURL(tc.in), tc.in)
	}
}

func TestRedactedYAMLHidesSecrets(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database:
  url: postgres://app:secret@db:5432/app?sslpassword=secret
coordination:
  url: "host=db user=app password='secret' dbname=app"
projectors:
  - name: orders
    sink:
      sql:
        target_url: host=other password=secret
        handlers: {"*": SELECT 1}
`), nil)
	require.NoError(t, err)

	out, err := cfg.YAML()
	require.NoError(t, err)
	require.NotContains(t, string(out), "secret")
	require.Contains(t, string(out), "url: postgres://app:xxxxx@db:5432/app?sslpassword=xxxxx")
	require.Contains(t, string(out), "poll_interval: 50ms")
	require.Contains(t, string(out), "lease_timeout: 15s")

	// Redacted is a deep copy: the original keeps its secrets.
	r := cfg.Redacted()
	r.Projectors[0].Sink.SQL.Handlers["*"] = "changed"
	r.Projectors[0].Name = "changed"
	require.Contains(t, cfg.Database.URL, "secret")
	require.Contains(t, cfg.Projectors[0].Sink.SQL.TargetURL, "secret")
	require.Equal(t, "SELECT 1", cfg.Projectors[0].Sink.SQL.Handlers["*"])
	require.Equal(t, "orders", cfg.Projectors[0].Name)
}

func TestValidationErrorsHideSecrets(t *testing.T) {
	t.Parallel()

	for _, dsn := range []string{
		"postgres://u:secret@h:notaport/db",
		"postgres://u:secret@h:99999999/db",
		"postgres://u:secret@[::1/db",
		"postgres://u:sec/ret@h:x/db",
		"postgres://u:secret@h/db?sslmode=bogus",
		"postgres://u:secret@h/db?password=secret&connect_timeout=x",
		"postgres://u:se%63ret@h:x/db",
		"host=h password=secret port=notaport",
		"host=h password='secret",
		"host=h password=secret sslmode=bogus",
		"host=h password secret",
	} {
		t.Run(dsn, func(t *testing.T) {
			t.Parallel()
			for _, key := range []string{"PROJECTORD_DATABASE_URL", "PROJECTORD_COORDINATION_URL"} {
				env := map[string]string{"PROJECTORD_DATABASE_URL": testURL, key: dsn}
				_, err := LoadBytes(nil, envMap(env))
				require.Error(t, err)
				require.NotContains(t, strings.ToLower(err.Error()), "secret")
				require.NotContains(t, err.Error(), "sec/ret")
				require.Contains(t, err.Error(), "not a valid PostgreSQL connection string")
			}
		})
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	t.Parallel()

	cfg, err := LoadBytes([]byte(`
database: {url: "postgres://u@h/db"}
source: {listen: true, columns: {event_id: id}}
projectors:
  - name: orders
    event_types: [OrderPlaced, "yes", "123"]
    stream_prefix: "order-"
    on_error: {then: skip}
    sink:
      sql:
        handlers:
          OrderPlaced: |
            INSERT INTO t VALUES (@data->>'id')
            ON CONFLICT DO NOTHING
          "yes": "true"
          "123": SELECT 1
`), nil)
	require.NoError(t, err)
	out, err := cfg.YAML()
	require.NoError(t, err)
	again, err := LoadBytes(out, nil)
	require.NoError(t, err, string(out))
	require.Equal(t, cfg, again)
}

func TestRedactURLOverMasksAtInQuery(t *testing.T) {
	t.Parallel()

	// Cannot be told apart from a password with a stranded "@"; masked generously.
	require.Equal(t, "postgres://u:xxxxx@example", RedactURL("postgres://u:pw@h/db?application_name=me@example"))
	require.Equal(t, "postgres://h/db?application_name=me@example", RedactURL("postgres://h/db?application_name=me@example"))
}
