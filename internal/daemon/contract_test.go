package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
)

// contract is what the shared suite needs from a backend implementation.
type contract struct {
	a, b       runner.Backend // two replicas of one store; projector "c" registered
	appendN    func(t *testing.T, n int, typ string)
	loseLeases func(t *testing.T, b runner.Backend)
	applied    func(t *testing.T) int // events applied by projector c's sink
}

func memoryContract(t *testing.T) *contract {
	mem := memtest.New()
	sink := &countingSink{}
	mem.SetSink("c", sink)
	return &contract{
		a: mem.Node("a"), b: mem.Node("b"),
		appendN: func(t *testing.T, n int, typ string) {
			for i := 0; i < n; i++ {
				mem.AppendCommitted("s", typ, "{}")
			}
		},
		loseLeases: func(t *testing.T, b runner.Backend) { mem.LoseLeases(b.(*memtest.Node).Name()) },
		applied:    func(t *testing.T) int { return sink.count() },
	}
}

func postgresContract(t *testing.T) *contract {
	tb := setupPG(t)
	cfg := tb.config(t, config.Projector{Name: "c"})
	return &contract{
		a: tb.backend(t, cfg, "a"), b: tb.backend(t, cfg, "b"),
		appendN: func(t *testing.T, n int, typ string) { tb.appendEvents(t, n, n, typ) },
		loseLeases: func(t *testing.T, b runner.Backend) {
			_, err := tb.pool.Exec(tb.ctx, `SELECT pg_terminate_backend($1)`, int(b.(*runner.PGBackend).Session.PID()))
			require.NoError(t, err)
		},
		applied: func(t *testing.T) (n int) {
			require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM applied WHERE projector = 'c'`).Scan(&n))
			return n
		},
	}
}

// TestBackendContract runs one suite against both backends, so the fast
// in-memory loop tests stand for the real thing.
func TestBackendContract(t *testing.T) {
	t.Parallel()
	for name, mk := range map[string]func(*testing.T) *contract{"memory": memoryContract, "postgres": postgresContract} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			t.Run("leadership", func(t *testing.T) { testLeadershipContract(t, mk(t)) })
			t.Run("reads", func(t *testing.T) { testReadContract(t, mk(t)) })
			t.Run("fencing", func(t *testing.T) { testFencingContract(t, mk(t)) })
		})
	}
}

func waitDone(t *testing.T, l runner.Lease) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("lease did not end")
	}
}

func testLeadershipContract(t *testing.T, c *contract) {
	ctx := t.Context()
	la, err := c.a.TryAcquire(ctx, "c")
	require.NoError(t, err)
	_, err = c.b.TryAcquire(ctx, "c")
	require.ErrorIs(t, err, runner.ErrNotLeader)

	turn := c.b.Turn()
	require.NoError(t, la.Release(ctx))
	waitDone(t, la)
	select {
	case <-turn:
	case <-time.After(5 * time.Second):
		t.Fatal("release did not give standbys a turn")
	}
	lb, err := c.b.TryAcquire(ctx, "c")
	require.NoError(t, err)

	c.loseLeases(t, c.b)
	waitDone(t, lb)
	require.Error(t, lb.Err())
	require.Eventually(t, func() bool {
		l, err := c.a.TryAcquire(ctx, "c")
		if err == nil {
			_ = l.Release(ctx)
		}
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "a lost lease frees the lock")
}

func testReadContract(t *testing.T, c *contract) {
	ctx := t.Context()
	c.appendN(t, 5, "A")
	c.appendN(t, 5, "B")
	var head store.Cursor
	require.Eventually(t, func() bool {
		head, _ = c.a.Head()
		all, err := c.a.Read(ctx, store.Cursor{}, store.Filter{}, 100, nil)
		return err == nil && len(all) == 10 && head == all[9].Cursor
	}, 10*time.Second, 5*time.Millisecond, "head and reads reach every committed event")

	page, err := c.a.Read(ctx, store.Cursor{}, store.Filter{}, 3, nil)
	require.NoError(t, err)
	require.Len(t, page, 3)
	rest, err := c.a.Read(ctx, page[2].Cursor, store.Filter{}, 100, nil)
	require.NoError(t, err)
	require.Len(t, rest, 7)
	require.True(t, page[2].Cursor.Less(rest[0].Cursor))
	bs, err := c.a.Read(ctx, store.Cursor{}, store.Filter{EventTypes: []string{"B"}}, 100, nil)
	require.NoError(t, err)
	require.Len(t, bs, 5)
	for _, e := range bs {
		require.Equal(t, "B", e.Type)
	}
}

func testFencingContract(t *testing.T, c *contract) {
	ctx := t.Context()
	c.appendN(t, 4, "A")
	var events []store.Event
	require.Eventually(t, func() bool {
		var err error
		events, err = c.a.Read(ctx, store.Cursor{}, store.Filter{}, 100, nil)
		return err == nil && len(events) == 4
	}, 10*time.Second, 5*time.Millisecond)

	ca, err := c.a.Claim(ctx, "c")
	require.NoError(t, err)
	require.NoError(t, c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, To: events[1].Cursor, Events: events[:2]}))
	require.Equal(t, 2, c.applied(t))

	cb, err := c.b.Claim(ctx, "c")
	require.NoError(t, err)
	require.Greater(t, cb.Epoch, ca.Epoch)
	require.Equal(t, events[1].Cursor, cb.Cursor, "the new leader resumes at the checkpoint")

	err = c.a.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: ca.Epoch, From: events[1].Cursor, To: events[3].Cursor, Events: events[2:]})
	require.ErrorIs(t, err, store.ErrFenced, "the old leader is fenced")
	require.ErrorIs(t, c.a.SetStatus(ctx, "c", ca.Epoch, store.StatusHalted, "x"), store.ErrFenced)
	err = c.b.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cb.Epoch, From: store.Cursor{}, To: events[3].Cursor, Events: events[2:]})
	require.ErrorIs(t, err, store.ErrFenced, "a commit from a stale cursor is fenced")
	require.Equal(t, 2, c.applied(t), "fenced commits apply nothing")

	require.NoError(t, c.b.Commit(ctx, store.CommitRequest{Projector: "c", Epoch: cb.Epoch, From: events[1].Cursor, To: events[3].Cursor, Events: events[2:]}))
	require.Equal(t, 4, c.applied(t))
	require.NoError(t, c.b.SetStatus(ctx, "c", cb.Epoch, store.StatusRunning, ""))
	again, err := c.a.Claim(context.WithoutCancel(ctx), "c")
	require.NoError(t, err)
	require.Equal(t, events[3].Cursor, again.Cursor)
}
