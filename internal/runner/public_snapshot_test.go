package runner

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestPublicSnapshotOmitsPreparedXactName: the horizon holder's
// prepared-transaction name (gid) is chosen by whichever client ran
// PREPARE TRANSACTION (any role; XA managers put business identifiers in
// it). /status is unauthenticated and the README names only the backend
// pid; the gid goes out verbatim.
func TestPublicSnapshotOmitsPreparedXactName(t *testing.T) {
	s := Snapshot{Horizon: HorizonStatus{AgeSeconds: 5, Prepared: "order-4111111111111111"}}
	b, err := json.Marshal(s.Public())
	require.NoError(t, err)
	require.NotContains(t, string(b), "4111111111111111")
}
