package server

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
)

// poisonError is a last_error as the loop records it, with producer data
// in the stream id and in the value PostgreSQL quotes.
const poisonError = "event 812/45 (CardCharged, stream card-\x1b[2J-owner) failed 5 times: " +
	`ERROR: invalid input syntax for type integer: "4111-1111-1111-1111" (SQLSTATE 22P02)`

type leakyHealth struct{ fakeHealth }

func (leakyHealth) Snapshot() runner.Snapshot {
	return runner.Snapshot{Node: "n1", Head: 50, Projectors: []runner.ProjectorStatus{
		{Name: "charges", Status: "halted", Position: 44, LastError: poisonError},
		{Name: "skipper", Status: "running", Position: 50, LastError: "skipped " + poisonError},
	}, Error: "failed to connect to `user=projectord database=payments`: dial tcp 10.0.0.7:5432: connection refused"}
}

func TestStatusShowsNoEventData(t *testing.T) {
	t.Parallel()
	base := start(t, &leakyHealth{})
	code, body := get(t, base+"/status")
	require.Equal(t, http.StatusOK, code)
	for _, leak := range []string{"4111", "card-", "owner", "CardCharged", "invalid input", "payments", "user=", "10.0.0.7"} {
		require.NotContains(t, body, leak)
	}
	var snap runner.Snapshot
	require.NoError(t, json.Unmarshal([]byte(body), &snap))
	require.Equal(t, &runner.ErrorSummary{Kind: "poison", Then: "halt", SQLState: "22P02", XID: 812, Position: 45}, snap.Projectors[0].LastErrorSummary)
	require.Equal(t, "skip", snap.Projectors[1].LastErrorSummary.Then)
	require.Equal(t, &runner.ErrorSummary{Kind: "refresh"}, snap.ErrorSummary)
	require.Equal(t, int64(44), snap.Projectors[0].Position, "positions and states stay")
}
