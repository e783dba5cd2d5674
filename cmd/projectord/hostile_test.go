package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/demo"
	"github.com/projectord/projectord/internal/runner"
)

// hostileStream is a producer-written stream id that clears the screen and
// retitles the terminal when printed raw.
const hostileStream = "card-\x1b[2J\x1b]0;owned\x07"

// TestHostileEventData halts a projector on an event whose stream id holds
// terminal escapes and whose value PostgreSQL quotes in its error (a card
// number). `projectord status` shows the escapes escaped; /status, which is
// unauthenticated, shows neither the stream id nor the value, only the
// SQLSTATE and the event's position.
func TestHostileEventData(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 3)
	var pos int64
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ($1, 1, 'A', '{"n":"4111-1111-1111-1111"}') RETURNING global_position`, hostileStream).Scan(&pos))
	projector := `  - name: cards
    on_error: {max_attempts: 2, initial: 1ms, max: 5ms, then: halt}
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES ('cards', coalesce((@data->>'n')::bigint, @position))"}}}
`
	_, base := ob.replica(t, "node-h", projector)
	var body string
	waitFor(t, 30*time.Second, func() bool {
		var code int
		code, body = get(base + "/status")
		return code == 200 && strings.Contains(body, `"status": "halted"`)
	})
	for _, leak := range []string{"4111", "card-", "owned", "invalid input", `\u001b`} {
		require.NotContains(t, body, leak, "/status")
	}
	require.Contains(t, body, `"sqlstate": "22P02"`)
	require.Contains(t, body, fmt.Sprintf(`"position": %d`, pos))

	f := writeFile(t, "s.yaml", fmt.Sprintf("database: {url: '%s'}\nprojectors:\n%s", ob.url, projector))
	code, table, stderr := cli(t, "status", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.NotContains(t, table, "\x1b")
	require.NotContains(t, table, "\x07")
	require.Contains(t, table, `stream card-\x1b[2J\x1b]0;owned\x07)`, "escaped, still readable")
	require.Regexp(t, fmt.Sprintf(`cards .* halted\s+event \d+/%d `, pos), table)

	code, js, stderr := cli(t, "status", "-o", "json", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.NotContains(t, js, "\x1b")
	require.NotContains(t, js, "\x07")
	require.Contains(t, js, "4111-1111-1111-1111", "with database access, the full text")
}

func TestDevStatusEscapesControlCharacters(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	d := newDevStatus(&b, time.Now())
	d.print(time.Now(), runner.Snapshot{Projectors: []runner.ProjectorStatus{
		{Name: "cards", LastError: "event 1/4 (A, stream " + hostileStream + ") failed"},
	}, Error: "bad \x1b[31mred\u202e"}, demo.Stats{})
	out := b.String()
	require.NotContains(t, out, "\x1b")
	require.NotContains(t, out, "\x07")
	require.NotContains(t, out, "\u202e")
	require.Contains(t, out, `stream card-\x1b[2J\x1b]0;owned\x07) failed`)
	require.Contains(t, out, `bad \x1b[31mred\u202e`)
}

func TestPrintable(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain ASCII, Ünïcödé ✓ and 日本語": "plain ASCII, Ünïcödé ✓ and 日本語",
		"\x1b[2J\x1b]0;t\x07":            `\x1b[2J\x1b]0;t\x07`,
		"tab\there\r\nnl":                `tab\x09here\x0d\x0anl`,
		"del\x7f c1\u009b bidi\u202e":    `del\x7f c1\u009b bidi\u202e`,
		"bad utf-8 \xff\xc3":             `bad utf-8 \xff\xc3`,
		"":                               "",
	} {
		require.Equal(t, want, printable(in), "%q", in)
	}
}

// TestStatusJSONEscapesWhatATerminalInterprets: `status -o json` goes to
// terminals too; encoding/json leaves DEL, C1 controls and bidi overrides
// raw, so they are escaped after it, meaning the same to a JSON reader.
func TestStatusJSONEscapesWhatATerminalInterprets(t *testing.T) {
	t.Parallel()
	hostile := "card\u009b2J\u202eevil\x7f\u200b😀 ok"
	raw, err := json.Marshal(map[string]string{"last_error": hostile})
	require.NoError(t, err)
	require.Contains(t, string(raw), "\u009b", "encoding/json alone leaves it raw")
	out := jsonASCIIControls(raw)
	for _, r := range []string{"\u009b", "\u202e", "\x7f", "\u200b"} {
		require.NotContains(t, string(out), r)
	}
	require.Contains(t, string(out), `\u009b`)
	require.Contains(t, string(out), "😀 ok", "printable text stays")
	var back map[string]string
	require.NoError(t, json.Unmarshal(out, &back))
	require.Equal(t, hostile, back["last_error"], "a JSON reader sees the same string")
}
