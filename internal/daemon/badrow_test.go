package daemon

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// badRow is a source row that cannot be decoded into an event.
type badRow struct {
	cursor store.Cursor
	field  string // the event field at fault, as the error names it
	typ    *string
}

// sourceRows is what seedBadRows wrote: good events by type, bad rows in
// cursor order.
type sourceRows struct {
	good map[string][]int64 // event type -> positions
	bad  []badRow
	raw  map[int64]string // position -> the invalid JSON text written
}

// seedBadRows drops the native table's NOT NULL constraints (and, with
// textJSON, turns data and metadata into text columns), then writes good
// events of types A and B between rows with a NULL created_at, stream_id,
// stream_version or event_type, and, with textJSON, invalid JSON in data
// and in metadata. Every row is its own transaction, so cursor order is
// insertion order.
func seedBadRows(t *testing.T, tb *pgBundle, textJSON bool) sourceRows {
	t.Helper()
	alter := `ALTER TABLE events ALTER COLUMN stream_id DROP NOT NULL, ALTER COLUMN stream_version DROP NOT NULL,
		ALTER COLUMN event_type DROP NOT NULL, ALTER COLUMN data DROP NOT NULL, ALTER COLUMN created_at DROP NOT NULL`
	if textJSON {
		alter += `, ALTER COLUMN data TYPE text, ALTER COLUMN metadata TYPE text`
	}
	_, err := tb.pool.Exec(tb.ctx, alter)
	require.NoError(t, err)

	rows := sourceRows{good: map[string][]int64{}, raw: map[int64]string{}}
	seq := 0
	insert := func(stream, version, typ, data, meta any, nullCreated bool) store.Cursor {
		t.Helper()
		var c store.Cursor
		err := tb.pool.QueryRow(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data, metadata, created_at)
			VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN NULL ELSE now() END) RETURNING transaction_id, global_position`,
			stream, version, typ, data, meta, nullCreated).Scan(&c.XID, &c.Position)
		require.NoError(t, err)
		return c
	}
	good := func(typ string) {
		seq++
		c := insert(fmt.Sprintf("good-%d", seq), 1, typ, fmt.Sprintf(`{"n": %d}`, seq), `{"m": 1}`, false)
		rows.good[typ] = append(rows.good[typ], c.Position)
	}
	a := "A"
	bad := func(field string, typ *string, stream, version, data, meta any, nullCreated bool) {
		c := insert(stream, version, typ, data, meta, nullCreated)
		rows.bad = append(rows.bad, badRow{cursor: c, field: field, typ: typ})
	}
	good("A")
	good("B")
	bad("created_at", &a, "bad-created", 1, `{"n": "created"}`, `{"m": "created"}`, true)
	good("A")
	bad("stream_id", &a, nil, 1, `{"n": "stream"}`, nil, false)
	good("B")
	bad("stream_version", &a, "bad-version", nil, `{"n": "version"}`, nil, false)
	good("A")
	bad("event_type", nil, "bad-type", 1, `{"n": "type"}`, nil, false)
	good("B")
	if textJSON {
		bad("data", &a, "bad-data", 1, `{"n": not json`, `{"m": 1}`, false)
		rows.raw[rows.bad[len(rows.bad)-1].cursor.Position] = `{"n": not json`
		good("A")
		bad("metadata", &a, "bad-metadata", 1, `{"n": "metadata"}`, `nope`, false)
		rows.raw[rows.bad[len(rows.bad)-1].cursor.Position] = `nope`
	}
	good("A")
	good("B")
	return rows
}

// requireApplied checks that projector applied exactly the positions want,
// each once.
func requireApplied(t *testing.T, tb *pgBundle, projector string, want []int64) {
	t.Helper()
	var got []int64
	rows, err := tb.pool.Query(tb.ctx, `SELECT position FROM applied WHERE projector = $1 ORDER BY position`, projector)
	require.NoError(t, err)
	for rows.Next() {
		var p int64
		require.NoError(t, rows.Scan(&p))
		got = append(got, p)
	}
	require.NoError(t, rows.Err())
	want = slices.Clone(want)
	slices.Sort(want)
	require.Equal(t, want, got, "projector %s applies every good event exactly once and no bad row", projector)
}

func (r sourceRows) goodOf(types ...string) []int64 {
	var out []int64
	for _, typ := range types {
		out = append(out, r.good[typ]...)
	}
	return out
}

// deadLetter is a projectord.dead_letters row.
type deadLetter struct {
	StreamID, EventType, Payload, Metadata, PayloadRaw, MetadataRaw *string
	StreamVersion                                                   *int64
	CreatedAt                                                       *time.Time
	Error                                                           string
	Attempts                                                        int
}

func deadLetters(t *testing.T, tb *pgBundle, projector string) map[int64]deadLetter {
	t.Helper()
	rows, err := tb.pool.Query(tb.ctx, `SELECT position, stream_id, event_type, stream_version, created_at,
			payload::text, metadata::text, payload_raw, metadata_raw, error, attempts
		FROM projectord.dead_letters WHERE projector = $1`, projector)
	require.NoError(t, err)
	out := map[int64]deadLetter{}
	for rows.Next() {
		var pos int64
		var d deadLetter
		require.NoError(t, rows.Scan(&pos, &d.StreamID, &d.EventType, &d.StreamVersion, &d.CreatedAt,
			&d.Payload, &d.Metadata, &d.PayloadRaw, &d.MetadataRaw, &d.Error, &d.Attempts))
		out[pos] = d
	}
	require.NoError(t, rows.Err())
	return out
}

func TestPGBadSourceRowsArePoisonEvents(t *testing.T) {
	t.Parallel()
	for _, variant := range []struct {
		name     string
		textJSON bool
	}{{"jsonb", false}, {"text", true}} {
		t.Run(variant.name, func(t *testing.T) {
			t.Parallel()
			tb := setupPG(t)
			src := seedBadRows(t, tb, variant.textJSON)
			policy := func(then string) config.ErrorPolicy {
				return config.ErrorPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: runner.Then(then)}
			}
			onlyB := &config.SQLSink{Handlers: map[string]string{"B": `INSERT INTO applied (projector, position) VALUES ('only_b', @position)`}}
			cfg := tb.config(t,
				config.Projector{Name: "skips", OnError: policy("skip")},
				config.Projector{Name: "letters", OnError: policy("dead_letter")},
				// An event_types filter never matches a NULL type: that row is not this projector's.
				config.Projector{Name: "typed", EventTypes: []string{"A"}, OnError: policy("dead_letter")},
				// No handler for A: bad rows of type A are not its events; a typeless row may be.
				config.Projector{Name: "only_b", OnError: policy("dead_letter"), Sink: config.Sink{SQL: onlyB}},
			)
			tb.startDaemon(t, cfg, "node-a")
			tb.waitCaughtUp(t, "skips", "letters", "typed", "only_b")

			requireApplied(t, tb, "skips", src.goodOf("A", "B"))
			requireApplied(t, tb, "letters", src.goodOf("A", "B"))
			requireApplied(t, tb, "typed", src.goodOf("A"))
			requireApplied(t, tb, "only_b", src.goodOf("B"))
			skips := tb.checkpoint(t, "skips")
			require.Equal(t, store.StatusRunning, skips.Status)
			last := src.bad[len(src.bad)-1]
			require.Contains(t, skips.LastError, "skipped event "+last.cursor.String())
			require.Contains(t, skips.LastError, fmt.Sprintf("column %q", last.field))
			require.Empty(t, deadLetters(t, tb, "skips"))

			letters := deadLetters(t, tb, "letters")
			require.Len(t, letters, len(src.bad), "every bad row is dead-lettered once")
			for _, b := range src.bad {
				d, ok := letters[b.cursor.Position]
				require.True(t, ok, "bad %s row at %s is dead-lettered", b.field, b.cursor)
				require.Contains(t, d.Error, fmt.Sprintf("column %q (%s) is", b.field, b.field))
				require.Equal(t, 3, d.Attempts)
				require.Equal(t, b.field == "stream_id", d.StreamID == nil, "stream_id is NULL exactly when it was")
				require.Equal(t, b.field == "event_type", d.EventType == nil, "event_type is NULL exactly when it was")
				require.Equal(t, b.field == "stream_version", d.StreamVersion == nil, "stream_version is NULL exactly when it was")
				require.Equal(t, b.field == "created_at", d.CreatedAt == nil, "created_at is NULL exactly when it was")
				// What jsonb cannot hold is kept as text, the rest as jsonb.
				if b.field == "data" {
					require.Nil(t, d.Payload)
					require.Equal(t, src.raw[b.cursor.Position], *d.PayloadRaw)
				} else {
					require.NotNil(t, d.Payload, "valid data stays jsonb")
					require.Nil(t, d.PayloadRaw)
				}
				if b.field == "metadata" {
					require.Nil(t, d.Metadata)
					require.Equal(t, src.raw[b.cursor.Position], *d.MetadataRaw)
				} else {
					require.Nil(t, d.MetadataRaw)
				}
			}
			created := letters[src.bad[0].cursor.Position]
			require.JSONEq(t, `{"n": "created"}`, *created.Payload)
			require.JSONEq(t, `{"m": "created"}`, *created.Metadata)
			require.Equal(t, "bad-created", *created.StreamID)

			typed := deadLetters(t, tb, "typed")
			require.Len(t, typed, len(src.bad)-1, "every bad row of type A, not the typeless one")
			for _, b := range src.bad {
				_, ok := typed[b.cursor.Position]
				require.Equal(t, b.typ != nil, ok, "bad %s row", b.field)
			}
			onlyBLetters := deadLetters(t, tb, "only_b")
			require.Len(t, onlyBLetters, 1, "only the typeless row is only_b's poison")
			for _, b := range src.bad {
				if b.typ == nil {
					require.Contains(t, onlyBLetters[b.cursor.Position].Error, `column "event_type" (event_type) is NULL`)
				}
			}
		})
	}
}

func TestPGBadSourceRowsHaltTheProjectorOneByOne(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	src := seedBadRows(t, tb, true)
	cfg := tb.config(t, config.Projector{Name: "halts",
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: "halt"}})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	b := tb.backend(t, cfg, "node-a")
	all := src.goodOf("A", "B")
	for _, bad := range src.bad {
		ctx, cancel := context.WithTimeout(tb.ctx, 60*time.Second)
		err := runner.Run(ctx, p, b)
		cancel()
		require.ErrorIs(t, err, runner.ErrHalted, "halts on the bad %s row at %s", bad.field, bad.cursor)
		require.ErrorContains(t, err, fmt.Sprintf("event %s", bad.cursor))
		require.ErrorContains(t, err, fmt.Sprintf("column %q (%s) is", bad.field, bad.field))
		cp := tb.checkpoint(t, "halts")
		require.Equal(t, store.StatusHalted, cp.Status)
		require.Contains(t, cp.LastError, fmt.Sprintf("column %q", bad.field))
		require.True(t, cp.Cursor.Less(bad.cursor), "checkpoint %s stays before the bad row %s", cp.Cursor, bad.cursor)
		var before []int64
		for _, pos := range all {
			if pos < bad.cursor.Position {
				before = append(before, pos)
			}
		}
		requireApplied(t, tb, "halts", before)
		require.NotNil(t, cp.Halt, "the halt is recorded")
		require.Equal(t, "node-a", cp.Halt.By)
		require.Equal(t, &bad.cursor, cp.Halt.Event)
		// The operator deals with the row and moves the checkpoint past it.
		_, err = tb.pool.Exec(tb.ctx, `UPDATE projectord.checkpoints SET last_xid = $2, last_position = $3 WHERE projector = $1`,
			"halts", bad.cursor.XID, bad.cursor.Position)
		require.NoError(t, err)
		// Until it is resumed, no replica with these handlers runs it.
		err = runner.Run(tb.ctx, p, b)
		require.ErrorIs(t, err, runner.ErrHalted)
		require.ErrorIs(t, err, store.ErrProjectorHalted, "refused at the claim")
		require.Equal(t, cp.Epoch, tb.checkpoint(t, "halts").Epoch, "a refused claim fences nobody")
		was, err := store.NewTarget(tb.pool, time.Minute).Resume(tb.ctx, "halts")
		require.NoError(t, err)
		require.True(t, was)
	}
	ctx, cancel := context.WithCancel(tb.ctx)
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx, p, b) }()
	tb.waitCaughtUp(t, "halts")
	cancel()
	require.NoError(t, <-done)
	requireApplied(t, tb, "halts", all)
}
