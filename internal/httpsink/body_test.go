package httpsink

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

func sampleEvents() []store.Event {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.FixedZone("x", 3600))
	return []store.Event{
		{Cursor: store.Cursor{XID: 900, Position: 7}, StreamID: "order-1", StreamVersion: 3, Type: "OrderPlaced",
			Data: []byte(`{"total": 12.5, "note": "a \"quoted\" <b>"}`), Metadata: []byte(`{"user":"u1"}`), CreatedAt: at, EventID: "e-7"},
		{Cursor: store.Cursor{XID: 901, Position: 9}, StreamID: "str\"ange\n\u2028\xff", StreamVersion: 1, Type: "T<&>",
			Data: []byte(`[1,2]`), CreatedAt: at},
	}
}

// The body is a CloudEvents JSON batch: every attribute the contract names,
// data as JSON (not a string), events in the order given.
func TestAppendBatchIsACloudEventsBatch(t *testing.T) {
	body := AppendBatch(nil, "search_index", 0, sampleEvents())
	require.True(t, json.Valid(body), "%s", body)
	var got []map[string]any
	require.NoError(t, json.Unmarshal(body, &got))
	require.Len(t, got, 2)
	e := got[0]
	require.Equal(t, "1.0", e["specversion"])
	require.Equal(t, "e-7", e["id"])
	require.Equal(t, "projectord/search_index", e["source"])
	require.Equal(t, "OrderPlaced", e["type"])
	require.Equal(t, "2026-03-04T04:06:07.890000Z", e["time"])
	require.Equal(t, "application/json", e["datacontenttype"])
	require.Equal(t, map[string]any{"total": 12.5, "note": `a "quoted" <b>`}, e["data"])
	require.Equal(t, "7", e["position"])
	require.Equal(t, "900", e["transactionid"])
	require.Equal(t, "order-1", e["streamid"])
	require.Equal(t, "3", e["streamversion"])
	require.Equal(t, `{"user":"u1"}`, e["metadata"], "the metadata's JSON text")
	require.NotContains(t, e, "resetgeneration", "generation 0 sends none")

	e = got[1]
	require.Equal(t, "search_index:9", e["id"], "no event id: projector and position")
	require.Equal(t, "str\"ange\n\u2028\uFFFD", e["streamid"], "escaped, invalid UTF-8 replaced")
	require.Equal(t, "T<&>", e["type"])
	require.Equal(t, []any{float64(1), float64(2)}, e["data"])
	require.NotContains(t, e, "metadata", "absent when the event has none")
	// CloudEvents: extension names are lowercase alphanumeric.
	for k := range e {
		require.Regexp(t, `^[a-z0-9]+$`, k)
	}
}

func TestAppendBatchReusesTheBuffer(t *testing.T) {
	ev := sampleEvents()
	buf := AppendBatch(nil, "p", 0, ev)
	n := testing.AllocsPerRun(50, func() { buf = AppendBatch(buf[:0], "p", 0, ev) })
	require.Zero(t, n, "encoding into a buffer of the right size allocates nothing")
	require.True(t, strings.HasPrefix(string(buf), `[{"specversion":"1.0"`))
}

// The webhook-id is the projector's, its reset generation's and its
// events': the same for the same events, different for another projector,
// generation, or set of events (even with the same first and last).
func TestWebhookIDIsDerivedFromTheEventsAndGeneration(t *testing.T) {
	ev := func(ps ...int64) []store.Event {
		out := make([]store.Event, len(ps))
		for i, p := range ps {
			out[i].Cursor = store.Cursor{XID: uint64(p), Position: p}
		}
		return out
	}
	id := WebhookID("p", 0, ev(1, 2, 3))
	require.Equal(t, id, WebhookID("p", 0, ev(1, 2, 3)))
	require.NotEqual(t, id, WebhookID("q", 0, ev(1, 2, 3)))
	require.NotEqual(t, id, WebhookID("p", 1, ev(1, 2, 3)), "a reset gives new ids")
	require.NotEqual(t, id, WebhookID("p", 0, ev(1, 3)), "same range, other events")
	require.NotEqual(t, id, WebhookID("p", 0, ev(1, 2, 4)))
	require.True(t, strings.HasPrefix(id, "msg_"))
}

// CloudEvents 1.0 (spec.md, "Type System") allows attribute values
// of Boolean, Integer (-2^31..2^31-1), String, Binary, URI, URI-reference
// and Timestamp only; an extension attribute's value that is a JSON object,
// or an Integer out of range, makes the event invalid (the Go SDK's
// types.Validate refuses both: "invalid CloudEvents value", "out of range").
// A transaction id past 2^31 (any busy cluster; xid8 carries the epoch
// above bit 32) and any event with metadata would produce such events: they
// go as Strings.
func TestAppendBatchAttributesAreCloudEventsTypes(t *testing.T) {
	ev := []store.Event{{Cursor: store.Cursor{XID: 5_000_000_000, Position: 3_000_000_000}, StreamID: "s", StreamVersion: 1,
		Type: "T", Data: []byte(`{}`), Metadata: []byte(`{"user":"u1"}`), CreatedAt: time.Now()}}
	var got []map[string]any
	require.NoError(t, json.Unmarshal(AppendBatch(nil, "p", 7, ev), &got))
	for _, k := range []string{"position", "transactionid", "streamid", "streamversion", "metadata", "resetgeneration"} {
		switch v := got[0][k].(type) {
		case string, bool, nil:
		case float64:
			if v < math.MinInt32 || v > math.MaxInt32 {
				t.Errorf("%s = %.0f is out of the CloudEvents Integer range", k, v)
			}
		default:
			t.Errorf("%s is a %T, not a CloudEvents type", k, v)
		}
	}
	require.Equal(t, "5000000000", got[0]["transactionid"])
	require.Equal(t, "3000000000", got[0]["position"])
	require.Equal(t, "7", got[0]["resetgeneration"])
	var md map[string]any
	require.NoError(t, json.Unmarshal([]byte(got[0]["metadata"].(string)), &md), "metadata is the event's JSON text")
	require.Equal(t, map[string]any{"user": "u1"}, md)
}
