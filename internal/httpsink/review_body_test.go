package httpsink

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// Review: CloudEvents 1.0 (spec.md, "Type System") allows attribute values
// of Boolean, Integer (-2^31..2^31-1), String, Binary, URI, URI-reference
// and Timestamp only; an extension attribute's value that is a JSON object,
// or an Integer out of range, makes the event invalid (the Go SDK's
// types.Validate refuses both: "invalid CloudEvents value", "out of range").
// A transaction id past 2^31 (any busy cluster; xid8 carries the epoch
// above bit 32) and any event with metadata produce such events.
func TestReviewExtensionAttributesAreCloudEventsTypes(t *testing.T) {
	ev := []store.Event{{Cursor: store.Cursor{XID: 5_000_000_000, Position: 3_000_000_000}, StreamID: "s", StreamVersion: 1,
		Type: "T", Data: []byte(`{}`), Metadata: []byte(`{"user":"u1"}`), CreatedAt: time.Now()}}
	var got []map[string]any
	require.NoError(t, json.Unmarshal(AppendBatch(nil, "p", 0, ev), &got))
	for _, k := range []string{"position", "transactionid", "streamid", "streamversion", "metadata"} {
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
}
