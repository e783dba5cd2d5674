package store_test

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// operatorFixture is a claimed projector p over four events, whose sink
// records each application in applied, and fails for data {"n": "x"}.
func operatorFixture(t *testing.T) (*testBundle, *store.Target, *store.SQLSink, []store.Event, store.Checkpoint) {
	t.Helper()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE applied (position bigint NOT NULL)`)
	require.NoError(t, err)
	for _, d := range []string{`{}`, `{}`, `{"n": "x"}`, `{}`} {
		tb.insert(t, "s", "A", d)
	}
	sink, err := store.CompileSQLSink(map[string]string{
		"A": `INSERT INTO applied VALUES (@position + coalesce((@data->>'n')::int, 0) * 0)`,
	}, "")
	require.NoError(t, err)
	events, err := store.NewReader(tb.pool, tb.src, time.Second).Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, events, 4)
	target := store.NewTarget(tb.pool, 5*time.Second)
	cp, err := target.Claim(tb.ctx, "p", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	return tb, target, sink, events, cp
}

func appliedPositions(t *testing.T, tb *testBundle) []int64 {
	t.Helper()
	rows, err := tb.pool.Query(tb.ctx, `SELECT position FROM applied ORDER BY position`)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return out
}

// TestPauseFenceRefusesTheBatchInFlight: once Pause has returned, no batch
// of the projector commits, a batch whose statements ran before the pause
// included (its advance() comes last and is refused); a claim and a status
// write keep the pause; Resume ends it and the refused batch commits from
// the same checkpoint.
func TestPauseFenceRefusesTheBatchInFlight(t *testing.T) {
	tb, target, sink, events, cp := operatorFixture(t)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[0].Cursor, Events: events[:1]}, sink))

	// A batch in flight: its sink statement has run, its advance has not.
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(tb.ctx) }()
	_, err = tx.Exec(tb.ctx, `INSERT INTO applied VALUES ($1)`, events[1].Position)
	require.NoError(t, err)

	already, err := target.Pause(tb.ctx, "p", "test")
	require.NoError(t, err)
	require.False(t, already)
	_, err = tx.Exec(tb.ctx, `SELECT projectord.advance('p', $1, $2, $3, $4, $5, 1)`,
		cp.Epoch, events[0].XID, events[0].Position, events[1].XID, events[1].Position)
	require.ErrorContains(t, err, "PJ002")
	require.NoError(t, tx.Rollback(tb.ctx))

	// Through Commit, with and without a dead letter: refused as paused.
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, From: events[0].Cursor, To: events[1].Cursor, Events: events[1:2]}, sink)
	require.ErrorIs(t, err, store.ErrPaused)
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, From: events[0].Cursor, To: events[1].Cursor,
		DeadLetter: &store.DeadLetter{Event: events[1], Error: "x", Attempts: 1}}, sink)
	require.ErrorIs(t, err, store.ErrPaused)
	require.Equal(t, []int64{events[0].Position}, appliedPositions(t, tb))

	already, err = target.Pause(tb.ctx, "p", "test")
	require.NoError(t, err)
	require.True(t, already, "a second pause changes nothing")

	// A new leader stays paused, and so does a status write.
	cp2, err := target.Claim(tb.ctx, "p", "n2", 0, store.OrderXID8)
	require.NoError(t, err)
	require.Equal(t, store.StatusPaused, cp2.Status)
	require.Equal(t, events[0].Cursor, cp2.Cursor)
	require.NoError(t, target.SetStatus(tb.ctx, "p", cp2.Epoch, store.StatusRunning, ""))
	paused, err := target.Paused(tb.ctx, "p")
	require.NoError(t, err)
	require.True(t, paused)
	rec, err := target.PauseOf(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, "test", rec.By)
	c, _, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, store.StatusPaused, c.Status)

	was, err := target.Resume(tb.ctx, "p")
	require.NoError(t, err)
	require.True(t, was)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp2.Epoch, From: events[0].Cursor, To: events[1].Cursor, Events: events[1:2]}, sink))
	require.Equal(t, []int64{events[0].Position, events[1].Position}, appliedPositions(t, tb))
	c, _, err = target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, store.StatusRunning, c.Status)

	_, err = target.Pause(tb.ctx, "never-ran", "test")
	require.ErrorIs(t, err, store.ErrNoCheckpoint)
}

// TestDeadLetterRetryAppliesOnceUnderTheFence: the leader's retry applies
// the requested dead letters in one fenced transaction: a deposed or paused
// leader applies nothing; an event that fails again keeps its row (new
// error, one more attempt, request cleared) without undoing the others; an
// applied row is gone, so a second request cannot apply it again.
func TestDeadLetterRetryAppliesOnceUnderTheFence(t *testing.T) {
	tb, target, sink, events, cp := operatorFixture(t)
	for i, e := range events[:3] {
		from := store.Cursor{}
		if i > 0 {
			from = events[i-1].Cursor
		}
		require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, From: from, To: e.Cursor,
			DeadLetter: &store.DeadLetter{Event: e, Error: "broken handler", Attempts: 2}}, sink))
	}
	rows, err := target.DeadLetters(tb.ctx, "p")
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Nil(t, rows[0].RetryRequestedAt)

	_, err = target.RequestRetry(tb.ctx, "p", &[]int64{events[3].Position}[0])
	require.ErrorIs(t, err, store.ErrNoDeadLetter)
	asked, err := target.RequestRetry(tb.ctx, "p", nil)
	require.NoError(t, err)
	require.Len(t, asked, 3)

	// A deposed leader applies nothing.
	cp2, err := target.Claim(tb.ctx, "p", "n2", 0, store.OrderXID8)
	require.NoError(t, err)
	_, err = target.RetryDeadLetters(tb.ctx, "p", cp.Epoch, sink)
	require.ErrorIs(t, err, store.ErrFenced)
	require.Empty(t, appliedPositions(t, tb))

	// Nor does a paused one.
	_, err = target.Pause(tb.ctx, "p", "test")
	require.NoError(t, err)
	_, err = target.RetryDeadLetters(tb.ctx, "p", cp2.Epoch, sink)
	require.ErrorIs(t, err, store.ErrPaused)
	_, err = target.Resume(tb.ctx, "p")
	require.NoError(t, err)

	outs, err := target.RetryDeadLetters(tb.ctx, "p", cp2.Epoch, sink)
	require.NoError(t, err)
	require.Len(t, outs, 3)
	require.NoError(t, outs[0].Err)
	require.NoError(t, outs[1].Err)
	require.ErrorContains(t, outs[2].Err, "invalid input syntax")
	require.Equal(t, []int64{events[0].Position, events[1].Position}, appliedPositions(t, tb))
	rows, err = target.DeadLetters(tb.ctx, "p")
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, events[2].Cursor, rows[0].Cursor)
	require.Nil(t, rows[0].RetryRequestedAt)
	require.NotNil(t, rows[0].RetriedAt)
	require.Equal(t, 3, rows[0].Attempts)
	require.Contains(t, rows[0].Error, "invalid input syntax")

	// Nothing requested: nothing happens. An applied one cannot be asked again.
	outs, err = target.RetryDeadLetters(tb.ctx, "p", cp2.Epoch, sink)
	require.NoError(t, err)
	require.Empty(t, outs)
	_, err = target.RequestRetry(tb.ctx, "p", &events[0].Position)
	require.ErrorIs(t, err, store.ErrNoDeadLetter)
	require.Equal(t, []int64{events[0].Position, events[1].Position}, appliedPositions(t, tb))

	_, err = target.DiscardDeadLetter(tb.ctx, "p", events[0].Position)
	require.ErrorIs(t, err, store.ErrNoDeadLetter)
	gone, err := target.DiscardDeadLetter(tb.ctx, "p", events[2].Position)
	require.NoError(t, err)
	require.Len(t, gone, 1)
	rows, err = target.DeadLetters(tb.ctx, "p")
	require.NoError(t, err)
	require.Empty(t, rows)
}

// TestGroupCommitRefusesOnlyThePausedMember: in a group, a paused
// projector's batch is refused (ErrPaused) and the others commit, as the
// group does with a deposed member.
func TestGroupCommitRefusesOnlyThePausedMember(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	queued, release := store.HoldGroups(target)
	const n, paused = 6, 3
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	_, err := target.Pause(tb.ctx, projectorName(paused), "test")
	require.NoError(t, err)
	release()
	wait()

	require.ErrorIs(t, errs[paused], store.ErrPaused)
	for i := range n {
		if i != paused {
			require.NoError(t, errs[i], projectorName(i))
			requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
		}
	}
	requireLanded(t, tb, target, projectorName(paused), store.Cursor{}, 0)
}
