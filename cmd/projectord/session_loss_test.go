package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lossCounts sums projectord_coordination_heartbeat_failures_total over its
// reasons, and returns the count of each reason too.
func lossCounts(base string) (float64, map[string]float64, error) {
	m, err := scrape(base)
	if err != nil {
		return 0, nil, err
	}
	const name = "projectord_coordination_heartbeat_failures_total"
	sum, by := 0.0, map[string]float64{}
	found := false
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		found = true
		sum += v
		by[k] = v
	}
	if !found {
		return 0, nil, fmt.Errorf("%s exports no %s", base, name)
	}
	return sum, by, nil
}

// Six terminations of a replica's coordination backend, each after the
// session came back up, are six session losses on /metrics, all of reason
// connection: what the flapping alert counts. Before, only a failed
// heartbeat query counted, so a reset met while waiting for notifications
// (the usual case) was never seen.
func TestEverySessionLossIsCountedOnMetrics(t *testing.T) {
	t.Parallel()
	ob := setupObs(t)
	ob.insert(t, 20)
	const node = "loss-a"
	_, base := ob.replica(t, node, sinkYAML("alpha"))
	waitFor(t, 30*time.Second, func() bool {
		m, err := scrape(base)
		return err == nil && m[`projectord_projector_leader{projector="alpha"}`] == 1
	})
	sum, by, err := lossCounts(base)
	require.NoError(t, err)
	require.Zero(t, sum, "%v", by)
	for _, r := range []string{"connection", "heartbeat", "query", "stalled", "pooler"} {
		_, ok := by[`projectord_coordination_heartbeat_failures_total{reason="`+r+`"}`]
		require.True(t, ok, "reason %s is exported at 0 from the start: %v", r, by)
	}

	const kills = 6
	prev := int32(0)
	for i := range kills {
		// The session is up again: a new coordination backend that has
		// registered in the node row (the last step before the session
		// serves).
		var pid int32
		waitFor(t, 60*time.Second, func() bool {
			err := ob.pool.QueryRow(ob.ctx, `SELECT a.pid FROM pg_stat_activity a
				JOIN projectord.nodes n ON n.node_id = $1 AND n.backend_pid = a.pid
				WHERE a.application_name = 'projectord-coord ' || $1 AND a.datname = current_database()`, node).Scan(&pid)
			return err == nil && pid != prev
		})
		var ok bool
		require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
		require.True(t, ok, "kill %d", i+1)
		prev = pid
		waitFor(t, 30*time.Second, func() bool {
			sum, _, err := lossCounts(base)
			return err == nil && sum >= float64(i+1)
		})
	}
	// Back up and leading again, and the count is exact.
	waitFor(t, 60*time.Second, func() bool {
		m, err := scrape(base)
		return err == nil && m[`projectord_projector_leader{projector="alpha"}`] == 1
	})
	sum, by, err = lossCounts(base)
	require.NoError(t, err)
	require.Equal(t, float64(kills), sum, "%v", by)
	require.Equal(t, float64(kills), by[`projectord_coordination_heartbeat_failures_total{reason="connection"}`], "%v", by)
}
