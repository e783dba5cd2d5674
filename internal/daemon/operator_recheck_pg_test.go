package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// stateSignals signals each state a run reports.
type stateSignals struct {
	runner.NopObserver
	ch chan runner.State
}

func (s stateSignals) StateChanged(_ string, st runner.State) {
	select {
	case s.ch <- st:
	default:
	}
}

func (s stateSignals) waitFor(t *testing.T, want runner.State) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case st := <-s.ch:
			if st == want {
				return
			}
		case <-deadline:
			t.Fatalf("never reported %s", want)
		}
	}
}

// A graceful stop of a paused leader is prompt while its pause re-check
// waits on the target (here: the checkpoints table locked, as by a
// migration or VACUUM FULL; or a target that hangs): a paused leader has
// nothing in flight, so the stop cancels the re-check.
func TestPausedLeaderStopsPromptlyWhileItsTargetHangs(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 20, 10, "A")
	cfg := tb.config(t, config.Projector{Name: "paused"})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	control := make(chan struct{}, 1)
	obs := stateSignals{ch: make(chan runner.State, 16)}
	p.Control, p.PauseRecheck, p.Observer = control, 50*time.Millisecond, obs
	b := tb.backend(t, cfg, "node-a")
	ctx, cancel := context.WithCancel(tb.ctx)
	defer cancel()
	done := start(ctx, p, b)
	tb.waitCaughtUp(t, "paused")

	target := store.NewTarget(tb.pool, 5*time.Second)
	_, err := target.Pause(tb.ctx, "paused", "test")
	require.NoError(t, err)
	control <- struct{}{}
	obs.waitFor(t, runner.StatePaused)

	// The target stops answering for the checkpoints table.
	lock, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(context.Background()) }()
	_, err = lock.Exec(tb.ctx, `LOCK TABLE projectord.checkpoints IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var n int
		_ = tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%paused_at IS NOT NULL FROM projectord.checkpoints%'`).Scan(&n)
		return n > 0
	}, 10*time.Second, 5*time.Millisecond, "the paused leader's re-check never waited")

	stopped := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(3 * time.Second):
		_ = lock.Rollback(context.Background())
		err := <-done
		t.Fatalf("a paused leader took %s to stop (until its re-check's lock wait ended; query_timeout would bound it): %v",
			time.Since(stopped).Round(time.Millisecond), err)
	}
}

// A retry request whose NOTIFY the leader missed (the coordination
// session reconnecting, or the CLI's notify failing, which it only warns
// about) is carried out by the running leader within a few PauseRecheck
// intervals.
func TestRetryRequestIsCarriedOutWithoutItsNotify(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 20, 10, "A")
	cfg := tb.config(t, config.Projector{Name: "letters"})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	control := make(chan struct{}, 1)
	p.Control, p.PauseRecheck = control, 50*time.Millisecond
	b := tb.backend(t, cfg, "node-a")
	ctx, cancel := context.WithCancel(tb.ctx)
	defer cancel()
	done := start(ctx, p, b)
	tb.waitCaughtUp(t, "letters")

	// A dead letter of this projector (an event the live path never
	// applied), and an operator's retry request for it, whose NOTIFY is lost.
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO projectord.dead_letters (projector, xid, position, stream_id, event_type, payload, error, attempts)
		VALUES ('letters', '1', 1000000, 'dl', 'A', '{}', 'broken handler', 3)`)
	require.NoError(t, err)
	target := store.NewTarget(tb.pool, 5*time.Second)
	_, err = target.RequestRetry(tb.ctx, "letters", nil)
	require.NoError(t, err)
	// The leader keeps working (batch boundaries go by).
	tb.appendEvents(t, 20, 5, "A")
	tb.waitCaughtUp(t, "letters")

	ok := false
	deadline := time.Now().Add(5 * time.Second) // 100 PauseRecheck intervals
	for !ok && time.Now().Before(deadline) {
		rows, err := target.DeadLetters(tb.ctx, "letters")
		require.NoError(t, err)
		ok = len(rows) == 0
		if !ok {
			tb.appendEvents(t, 1, 1, "A")
			tb.waitCaughtUp(t, "letters")
		}
	}
	// Control: the same request is carried out at once when nudged.
	control <- struct{}{}
	require.Eventually(t, func() bool {
		rows, err := target.DeadLetters(tb.ctx, "letters")
		return err == nil && len(rows) == 0
	}, 10*time.Second, 5*time.Millisecond, "not even a nudge carries the request out")
	require.True(t, ok, "a requested retry was never carried out by the running leader (no re-check without its NOTIFY)")
	cancel()
	require.NoError(t, <-done)
}

// An idle leader that missed the pause's NOTIFY reports paused within a
// few PauseRecheck intervals, not `leader` for as long as no event
// arrives (so the ProjectordProjectorPaused alert fires for it).
func TestIdleLeaderReportsPausedWithoutTheNotify(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 20, 10, "A")
	cfg := tb.config(t, config.Projector{Name: "idle"})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)
	obs := stateSignals{ch: make(chan runner.State, 16)}
	p.Control, p.PauseRecheck, p.Observer = make(chan struct{}, 1), 50*time.Millisecond, obs
	b := tb.backend(t, cfg, "node-a")
	ctx, cancel := context.WithCancel(tb.ctx)
	defer cancel()
	done := start(ctx, p, b)
	obs.waitFor(t, runner.StateLeader)
	tb.waitCaughtUp(t, "idle")

	_, err := store.NewTarget(tb.pool, 5*time.Second).Pause(tb.ctx, "idle", "test") // its NOTIFY is lost
	require.NoError(t, err)
	paused := false
	select {
	case st := <-obs.ch:
		paused = st == runner.StatePaused
	case <-time.After(5 * time.Second): // 100 PauseRecheck intervals
	}
	require.True(t, paused, "the checkpoint says paused; the idle leader still reports leader")
	cancel()
	require.NoError(t, <-done)
}
