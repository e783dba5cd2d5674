package main

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/pgtest"
)

// `dev --http-sink` runs the example receiver and a projector delivering
// every event to it: each event is received once (the receiver counts new
// events, deduplicated by position), and the projector's checkpoint ends at
// the last event.
func TestDevHTTPSinkDeliversEveryEventToTheExampleReceiver(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	p := startDev(t, "--database-url", url, "--http.listen", "", "--duration", "2s", "--rate", "300", "--http-sink")
	require.NoError(t, p.wait(t, 60*time.Second), "--duration exits 0")
	out := p.stdout.String()
	require.Regexp(t, `webhook     http://127\.0\.0\.1:\d+/events receives webhook_demo's batches`, out)
	require.Regexp(t, `check: the read models match all \d+ events`, out)
	var received int64
	for _, m := range regexp.MustCompile(`(?m)^webhook     204 No Content: (\d+) new events`).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		received += n
	}
	require.NotRegexp(t, `(?m)^webhook     [^2]\d\d `, out, "every request verified and accepted")

	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	var events, applied int64
	var atEnd bool
	require.NoError(t, pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM events), c.events_applied,
			(c.last_xid, c.last_position) = (SELECT transaction_id, global_position FROM events ORDER BY 1 DESC, 2 DESC LIMIT 1)
		FROM projectord.checkpoints c WHERE projector = 'webhook_demo'`).Scan(&events, &applied, &atEnd))
	require.Positive(t, events)
	require.Equal(t, events, received, "every event received once")
	require.Equal(t, events, applied)
	require.True(t, atEnd, "the checkpoint is at the last event")

	// status reads an HTTP projector's checkpoint from database.url.
	f := writeFile(t, "c.yaml", `
database: {url: '`+url+`'}
projectors:
  - name: webhook_demo
    sink: {http: {url: 'http://u:hunter4@127.0.0.1:1/events'}}
`)
	code, stdout, stderr := cli(t, "status", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	m := regexp.MustCompile(`webhook_demo +- +- +(\d+/\d+) +(\d+/\d+) +(\d+) `).FindStringSubmatch(stdout)
	require.NotNil(t, m, stdout)
	require.Equal(t, m[2], m[1], "the checkpoint is at the head")
	require.Equal(t, "0", m[3], "no lag")
	require.NotContains(t, stdout+stderr, "hunter4")
	t.Logf("status:\n%s", stdout)
}
