package pgtest_test

import (
	"context"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/pgtest"
)

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func dbName(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	require.NoError(t, err)
	return strings.TrimPrefix(u.Path, "/")
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var exists bool
	require.NoError(t, connect(t, pgtest.AdminURL()).QueryRow(t.Context(),
		`SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, name).Scan(&exists))
	return exists
}

func TestNewDatabaseClonesTemplate(t *testing.T) {
	t.Parallel()
	u := pgtest.NewDatabase(t)
	require.Regexp(t, regexp.MustCompile(`^t_\d+_[0-9a-f]{8}$`), dbName(t, u))

	var v string
	require.NoError(t, connect(t, u).QueryRow(t.Context(), `SELECT v FROM from_template`).Scan(&v))
	require.Equal(t, "seeded", v)
}

func TestNewDatabaseIsolated(t *testing.T) {
	t.Parallel()
	a := connect(t, pgtest.NewDatabase(t))
	b := connect(t, pgtest.NewDatabase(t))

	_, err := a.Exec(t.Context(), `CREATE TABLE only_in_a (id int); INSERT INTO from_template VALUES ('a')`)
	require.NoError(t, err)

	var reg *string
	var n int
	require.NoError(t, b.QueryRow(t.Context(),
		`SELECT to_regclass('only_in_a')::text, (SELECT count(*) FROM from_template)`).Scan(&reg, &n))
	require.Nil(t, reg, "a table created in one database leaked into another")
	require.Equal(t, 1, n, "a row inserted in one database leaked into another")
}

func TestNewDatabaseDroppedAfterTest(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("inner", func(t *testing.T) {
		u := pgtest.NewDatabase(t)
		name = dbName(t, u)
		connect(t, u) // left for the drop to disconnect
		require.True(t, databaseExists(t, name))
	})
	require.False(t, databaseExists(t, name))
}

func TestServer(t *testing.T) {
	t.Parallel()
	var one int
	require.NoError(t, connect(t, pgtest.AdminURL()).QueryRow(t.Context(), `SELECT 1`).Scan(&one))
	if os.Getenv(pgtest.EnvURL) != "" {
		require.Nil(t, pgtest.Cluster())
		return
	}
	c := pgtest.Cluster()
	require.NotNil(t, c)
	require.Equal(t, c.URL("postgres"), pgtest.AdminURL())
	require.NotZero(t, c.PID())
}
