package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

func TestClaimBumpsEpochAndFencesOlderLeader(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	tb.insert(t, "s", "A", `{}`)
	target := store.NewTarget(tb.pool, 5*time.Second)
	a, err := target.Claim(tb.ctx, "p", "node-a", 0, store.OrderXID8)
	require.NoError(t, err)
	require.Equal(t, int64(1), a.Epoch)
	b, err := target.Claim(tb.ctx, "p", "node-b", 0, store.OrderXID8)
	require.NoError(t, err)
	require.Equal(t, int64(2), b.Epoch)
	require.Equal(t, "node-b", b.LeaderNode)

	head, _, err := store.NewReader(tb.pool, tb.src, time.Second).Head(tb.ctx)
	require.NoError(t, err)
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: a.Epoch, To: head}, nil)
	require.ErrorIs(t, err, store.ErrFenced)
	require.ErrorIs(t, target.SetStatus(tb.ctx, "p", a.Epoch, store.StatusHalted, "x"), store.ErrFenced)

	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: b.Epoch, To: head}, nil))
	// A commit whose expected cursor is stale is fenced too.
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: b.Epoch, To: head}, nil)
	require.ErrorIs(t, err, store.ErrFenced)

	c, ok, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, head, c.Cursor)
}

func TestCommitIsAtomicWithSinkWrites(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE totals (id text PRIMARY KEY, n int NOT NULL CHECK (n < 3))`)
	require.NoError(t, err)
	for i := 0; i < 4; i++ {
		tb.insert(t, "order-1", "Inc", `{"id":"o1"}`)
	}
	sink, err := store.CompileSQLSink(map[string]string{
		"Inc": `INSERT INTO totals (id, n) VALUES (@data->>'id', 1) ON CONFLICT (id) DO UPDATE SET n = totals.n + 1`,
	}, "")
	require.NoError(t, err)
	events, err := store.NewReader(tb.pool, tb.src, time.Second).Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	target := store.NewTarget(tb.pool, 5*time.Second)
	cp, err := target.Claim(tb.ctx, "p", "n", 0, store.OrderXID8)
	require.NoError(t, err)

	// The third increment violates the check: nothing of the batch may land.
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[3].Cursor, Events: events}, sink)
	var applyErr *store.ApplyError
	require.True(t, errors.As(err, &applyErr), "got %v", err)
	require.Equal(t, 2, applyErr.Index)
	var rows int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM totals`).Scan(&rows))
	require.Zero(t, rows)
	c, _, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.True(t, c.Cursor.IsZero())

	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[1].Cursor, Events: events[:2]}, sink))
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, From: events[1].Cursor, To: events[2].Cursor,
		DeadLetter: &store.DeadLetter{Event: events[2], Error: "n too big", Attempts: 3}}, sink)
	require.NoError(t, err)
	var n, dead int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT n FROM totals WHERE id = 'o1'`).Scan(&n))
	require.Equal(t, 2, n)
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM projectord.dead_letters WHERE projector = 'p' AND position = $1 AND attempts = 3`, events[2].Position).Scan(&dead))
	require.Equal(t, 1, dead)
	c, _, err = target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, events[2].Cursor, c.Cursor)
	require.Equal(t, int64(2), c.EventsApplied)
}

func TestProjectorIDIsStable(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	a, err := store.ProjectorID(tb.ctx, tb.pool, "a", 5*time.Second)
	require.NoError(t, err)
	b, err := store.ProjectorID(tb.ctx, tb.pool, "b", 5*time.Second)
	require.NoError(t, err)
	a2, err := store.ProjectorID(tb.ctx, tb.pool, "a", 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, a, a2)
	require.NotEqual(t, a, b)
}

func TestCheckpointFromAnotherClusterIsRefusedUntilReset(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), url)
	require.NoError(t, err)
	defer pool.Close()
	ctx := t.Context()
	_, err = store.Migrate(ctx, pool, "test")
	require.NoError(t, err)
	target := store.NewTarget(pool, 5*time.Second)
	c, err := target.Claim(ctx, "p", "n", 111, store.OrderXID8)
	require.NoError(t, err)
	require.NoError(t, target.Commit(ctx, store.CommitRequest{Projector: "p", Epoch: c.Epoch, To: store.Cursor{XID: 900, Position: 5}}, nil))

	_, err = target.Claim(ctx, "p", "n", 222, store.OrderXID8)
	require.ErrorIs(t, err, store.ErrClusterChanged, "xids of another cluster mean nothing here")
	_, err = target.Claim(ctx, "p", "n", 111, store.OrderXID8)
	require.NoError(t, err)

	_, err = target.Reset(ctx, "p", "")
	require.NoError(t, err)
	c, err = target.Claim(ctx, "p", "n", 222, store.OrderXID8)
	require.NoError(t, err, "a reset projector adopts the new cluster")
	require.NoError(t, target.Commit(ctx, store.CommitRequest{Projector: "p", Epoch: c.Epoch, To: store.Cursor{XID: 10, Position: 1}}, nil))
	_, err = target.Claim(ctx, "p", "n", 222, store.OrderXID8)
	require.NoError(t, err)
}
