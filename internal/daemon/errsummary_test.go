package daemon

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// TestPGPoisonErrorSummary runs a poison event through the real loop and
// PostgreSQL: the summary parsed from the recorded last_error names the
// event's cursor, the policy and the SQLSTATE, and Public keeps none of the
// producer's data.
func TestPGPoisonErrorSummary(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE nums (projector text, n int)`)
	require.NoError(t, err)
	tb.appendEvents(t, 3, 3, "A")
	var bad store.Cursor
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES (E'card-\x1b[2J-owner', 1, 'A', '{"n":"4111-1111-1111-1111"}')
		RETURNING transaction_id, global_position`).Scan(&bad.XID, &bad.Position))
	policy := func(then string) config.ErrorPolicy {
		return config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.Then(then)}
	}
	sink := func(p string) config.Sink {
		return config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"A": `INSERT INTO nums VALUES ('` + p + `', (@data->>'n')::int)`}}}
	}
	cfg := tb.config(t,
		config.Projector{Name: "halts", OnError: policy("halt"), Sink: sink("halts")},
		config.Projector{Name: "letters", OnError: policy("dead_letter"), Sink: sink("letters")})
	cfg.Metrics.RefreshInterval = 50 * time.Millisecond
	d := tb.startDaemon(t, cfg, "node-a")

	want := map[string]runner.ErrorSummary{
		"halts":   {Kind: "poison", Then: "halt", SQLState: "22P02", XID: bad.XID, Position: bad.Position},
		"letters": {Kind: "poison", Then: "dead_letter", SQLState: "22P02", XID: bad.XID, Position: bad.Position},
	}
	// Until the policy applies, last_error is a "retrying:" note with a
	// summary of its own: wait for the policy's outcome.
	summarised := func() bool {
		n := 0
		for _, p := range d.Snapshot().Projectors {
			if p.LastErrorSummary != nil && *p.LastErrorSummary == want[p.Name] {
				n++
			}
		}
		return n == 2
	}
	require.Eventually(t, summarised, 30*time.Second, 10*time.Millisecond, "both projectors record the poison event")
	snap := d.Snapshot()
	for _, p := range snap.Projectors {
		require.Contains(t, p.LastError, "4111-1111-1111-1111", "the full text stays for `projectord status`")
		require.Equal(t, want[p.Name], *p.LastErrorSummary, p.Name)
	}

	public, err := json.Marshal(snap.Public())
	require.NoError(t, err)
	for _, leak := range []string{"4111", "card-", "owner", "invalid input"} {
		require.NotContains(t, string(public), leak)
	}
	require.Contains(t, string(public), `"sqlstate":"22P02"`)
}

// TestPGReadinessHidesConnectionDetails: while the database refuses the
// connection, readiness says why by SQLSTATE, never with the error's text,
// which names the user and the database (and the probes are unauthenticated).
func TestPGReadinessHidesConnectionDetails(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	u, err := url.Parse(tb.url)
	require.NoError(t, err)
	u.Path = "/no_such_db_for_readiness"
	cfg := tb.config(t, config.Projector{Name: "p"})
	cfg.Database.URL = u.String()
	d := tb.startDaemon(t, cfg, "node-a")

	database := func() runner.Check {
		_, checks := d.Readiness()
		for _, c := range checks {
			if c.Name == "database" {
				return c
			}
		}
		return runner.Check{}
	}
	require.Eventually(t, func() bool { c := database(); return c.Detail != "" && c.Detail != "connecting" }, 30*time.Second, 10*time.Millisecond)
	db := database()
	t.Logf("database check: %s", db.Detail)
	require.False(t, db.OK)
	require.Contains(t, db.Detail, "SQLSTATE 3D000")
	for _, leak := range []string{"no_such_db", "user=", "database=", "127.0.0.1", u.Port()} {
		require.NotContains(t, db.Detail, leak)
	}
	require.False(t, strings.Contains(db.Detail, "does not exist"), db.Detail)
}
