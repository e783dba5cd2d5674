package runner_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// pausable is a node whose fence refuses commits while paused, as
// projectord.advance() does: the pause lands while the first commit that
// reaches pauseAt is in flight, so that batch is refused whole.
type pausable struct {
	*memtest.Node
	pauseAt int64

	mu       sync.Mutex
	paused   bool
	refusals int
}

func (p *pausable) Commit(ctx context.Context, req store.CommitRequest) error {
	p.mu.Lock()
	if p.pauseAt > 0 && req.To.Position >= p.pauseAt {
		p.paused, p.pauseAt = true, 0
	}
	if p.paused {
		p.refusals++
		p.mu.Unlock()
		return fmt.Errorf("%w: projector %s is paused", store.ErrPaused, req.Projector)
	}
	p.mu.Unlock()
	return p.Node.Commit(ctx, req)
}

func (p *pausable) Paused(context.Context, string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused, nil
}

func (p *pausable) RetryDeadLetters(context.Context, string, int64) ([]store.RetryOutcome, error) {
	return nil, nil
}

func (p *pausable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}

// stateLog records what a run reports.
type stateLog struct {
	runner.NopObserver
	mu     sync.Mutex
	state  runner.State
	errors []string
}

func (s *stateLog) StateChanged(_ string, st runner.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = st
}

func (s *stateLog) Error(_, reason string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errors = append(s.errors, reason+": "+err.Error())
}

func (s *stateLog) get() (runner.State, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, append([]string(nil), s.errors...)
}

// TestPausedLeaderHoldsItsLeaseAndResumesFromTheCheckpoint: a batch refused
// because the projector was paused is no failure (no error reported, no
// retry): the leader reports paused, keeps its lease (a standby cannot
// start the projector) and waits without committing; a nudge after the
// resume sends it on from the checkpoint, and every event is applied once.
func TestPausedLeaderHoldsItsLeaseAndResumesFromTheCheckpoint(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	for range 40 {
		tb.mem.AppendCommitted("s", "A", "{}")
	}
	control := make(chan struct{}, 1)
	log := &stateLog{}
	tb.p.BatchSize = 5
	tb.p.Control = control
	tb.p.PauseRecheck = time.Hour // only the nudge can end the wait
	tb.p.Observer = log
	b := &pausable{Node: tb.mem.Node("a"), pauseAt: 13}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := start(ctx, tb.p, b)

	require.Eventually(t, func() bool { st, _ := log.get(); return st == runner.StatePaused }, 10*time.Second, time.Millisecond)
	cp, _ := tb.mem.Checkpoint("p")
	require.Equal(t, int64(10), cp.Cursor.Position, "the refused batch moved nothing")
	require.Equal(t, 10, tb.sink.count())
	require.Equal(t, "a", tb.mem.Leader("p"), "the paused leader keeps its lease")
	require.ErrorIs(t, runner.Run(ctx, tb.p, tb.mem.Node("b")), runner.ErrNotLeader)
	_, errs := log.get()
	require.Empty(t, errs, "a pause is not an error")
	b.mu.Lock()
	refused := b.refusals
	b.mu.Unlock()
	require.Equal(t, 1, refused, "one refusal, no retries")

	b.resume()
	control <- struct{}{}
	waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == headOf(tb.mem) })
	require.Len(t, tb.sink.positions(), 40)
	require.Empty(t, tb.sink.duplicates())
	st, errs := log.get()
	require.Equal(t, runner.StateLeader, st)
	require.Empty(t, errs)
	cancel()
	err := <-done
	require.False(t, errors.Is(err, runner.ErrPaused), "%v", err)
	require.NoError(t, err)
}

// pausedAsLeaseEnds claims a paused checkpoint while its lease is lost at
// the same moment.
type pausedAsLeaseEnds struct {
	*memtest.Node
	mem *memtest.Memory
}

func (p *pausedAsLeaseEnds) Claim(ctx context.Context, projector string) (store.Checkpoint, error) {
	cp, err := p.Node.Claim(ctx, projector)
	if err != nil {
		return cp, err
	}
	p.mem.LoseLeases(p.Name())
	select {
	case <-ctx.Done(): // the run's lease context: its cause is set
	case <-time.After(10 * time.Second):
	}
	cp.Status = store.StatusPaused
	return cp, nil
}

func (p *pausedAsLeaseEnds) Paused(context.Context, string) (bool, error) { return true, nil }

func (p *pausedAsLeaseEnds) RetryDeadLetters(context.Context, string, int64) ([]store.RetryOutcome, error) {
	return nil, nil
}

// TestLeaseLossWinsOverAPauseFoundAtClaim: when the lease ends as a claim
// finds the projector paused, Run returns the lease's cause, which the
// supervisor acts on, not ErrPaused.
func TestLeaseLossWinsOverAPauseFoundAtClaim(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	tb.mem.AppendCommitted("s", "A", "{}")
	tb.p.PauseRecheck = time.Hour
	b := &pausedAsLeaseEnds{Node: tb.mem.Node("a"), mem: tb.mem}
	err := runner.Run(t.Context(), tb.p, b)
	require.ErrorIs(t, err, runner.ErrLeaseLost)
	require.NotErrorIs(t, err, runner.ErrPaused)
}
