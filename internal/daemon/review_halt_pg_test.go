package daemon

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// statusOf is the projector's entry in the daemon's latest snapshot, once
// it is fresh.
func statusOf(d *Daemon, projector string) (runner.ProjectorStatus, bool) {
	s, fresh := d.View()
	if !fresh {
		return runner.ProjectorStatus{}, false
	}
	for _, p := range s.Projectors {
		if p.Name == projector {
			return p, true
		}
	}
	return runner.ProjectorStatus{}, false
}

// TestReviewHaltedOnTypelessRowHasLag: a projector that takes every event
// type (no event_types) but has handlers for some reads a row whose type is
// NULL, cannot tell which handler it was meant for, and halts on it (the
// loop keeps such rows: passing over them would lose an event). Its lag
// must count that row: it is halted on it, not caught up.
func TestReviewHaltedOnTypelessRowHasLag(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `ALTER TABLE events ALTER COLUMN event_type DROP NOT NULL`)
	require.NoError(t, err)
	tb.appendEvents(t, 3, 3, "A")
	var typeless int64
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ('typeless', 1, NULL, '{}') RETURNING global_position`).Scan(&typeless))
	cfg := tb.config(t, config.Projector{Name: "only_a", Sink: config.Sink{SQL: &config.SQLSink{
		Handlers: map[string]string{"A": `INSERT INTO applied (projector, position) VALUES ('only_a', @position)`}}}})
	cfg.Metrics.RefreshInterval = 100 * time.Millisecond
	d := tb.startDaemon(t, cfg, "node-a")
	waitState(t, d, "only_a", runner.StateHalted)
	c := tb.checkpoint(t, "only_a")
	require.NotNil(t, c.Halt)
	require.Equal(t, typeless, c.Halt.Event.Position, "halted on the typeless row")

	var st runner.ProjectorStatus
	require.Eventually(t, func() bool {
		p, ok := statusOf(d, "only_a")
		st = p
		return ok && p.Status == store.StatusHalted
	}, 30*time.Second, 10*time.Millisecond, "no fresh snapshot shows the halt")
	require.Less(t, st.Position, st.Head, "halted behind the head")
	require.Equal(t, int64(1), st.LagEvents, "the row it is halted on is lag")
}
