package main

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

// An HTTP sink's secrets stay out of `config print`, and a malformed
// secret_file stops `run` with exit 2, naming the projector and the file,
// never the content; nothing is delivered or checkpointed.
func TestHTTPSinkSecretsAndAMalformedSecretFile(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	for _, q := range store.NativeTableSQL("public.events") {
		_, err := pool.Exec(t.Context(), q)
		require.NoError(t, err)
	}
	secret := writeFile(t, "secret", "hunter2-is-not-a-whsec-secret\n")
	headers := writeFile(t, "headers", "Authorization: Bearer tok-hunter3\n")
	f := writeFile(t, "c.yaml", fmt.Sprintf(`
database: {url: '%s'}
http: {listen: ""}
projectors:
  - name: hooks
    sink: {http: {url: 'https://u:hunter4@127.0.0.1:1/events', secret_file: '%s', headers_file: '%s'}}
`, url, secret, headers))

	code, stdout, stderr := cli(t, "config", "print", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stdout, "url: https://u:xxxxx@127.0.0.1:1/events")
	require.Contains(t, stdout, "secret_file: "+secret)
	for _, s := range []string{"hunter2", "hunter3", "hunter4"} {
		require.NotContains(t, stdout+stderr, s)
	}

	code, _, stderr = cli(t, "config", "validate", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "projector hooks: sink.http.secret_file "+secret)
	require.NotContains(t, stderr, "hunter2")

	code, _, stderr = cli(t, "run", "--config", f)
	require.Equal(t, exitConfig, code, stderr)
	require.Contains(t, stderr, "projector hooks: sink.http.secret_file "+secret)
	for _, s := range []string{"hunter2", "hunter3", "hunter4"} {
		require.NotContains(t, stderr, s)
	}
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT count(*) FROM projectord.checkpoints`).Scan(&n))
	require.Zero(t, n)
}
