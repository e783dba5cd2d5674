package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// A reset deletes the projector's dead letters, so the operator's natural
// sequence (fix the handler, reset, retry what `dead-letters list` showed)
// cannot apply an event the replay applied a second time.
func TestResetDeletesDeadLettersSoARetryCannotApplyTwice(t *testing.T) {
	tb, target, sink, events, cp := operatorFixture(t)
	// events[0] failed under the broken handler and was dead-lettered.
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[0].Cursor,
		DeadLetter: &store.DeadLetter{Event: events[0], Error: "broken handler", Attempts: 3}}, sink))

	// The handler is fixed; the operator rebuilds the read model.
	_, err := target.Reset(tb.ctx, "p", `TRUNCATE applied`)
	require.NoError(t, err)
	cp2, err := target.Claim(tb.ctx, "p", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	// The replay applies events[0] and events[1] through the fixed handler.
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp2.Epoch, To: events[1].Cursor, Events: events[:2]}, sink))
	require.Equal(t, []int64{events[0].Position, events[1].Position}, appliedPositions(t, tb))

	// The reset deleted the pre-reset row: there is nothing left to retry.
	rows, err := target.DeadLetters(tb.ctx, "p")
	require.NoError(t, err)
	require.Empty(t, rows, "the reset kept the dead letter of an event its replay re-applies")
	_, err = target.RequestRetry(tb.ctx, "p", &events[0].Position)
	require.ErrorIs(t, err, store.ErrNoDeadLetter)
	outs, err := target.RetryDeadLetters(tb.ctx, "p", cp2.Epoch, sink)
	require.NoError(t, err)
	require.Empty(t, outs)
	require.Equal(t, []int64{events[0].Position, events[1].Position}, appliedPositions(t, tb),
		"event %d applied twice: by the replay and by the retry of its stale dead letter", events[0].Position)
}

// A dead letter ahead of the checkpoint is refused by a retry and kept:
// the replay applies its event when it reaches it, once.
func TestRetryRefusesADeadLetterAheadOfTheCheckpoint(t *testing.T) {
	tb, target, sink, events, cp := operatorFixture(t)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[0].Cursor,
		DeadLetter: &store.DeadLetter{Event: events[0], Error: "broken handler", Attempts: 3}}, sink))
	_, err := target.Reset(tb.ctx, "p", `TRUNCATE applied`)
	require.NoError(t, err)
	cp2, err := target.Claim(tb.ctx, "p", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	require.True(t, cp2.Cursor.IsZero())

	// The reset deleted the dead letter.
	_, err = target.RequestRetry(tb.ctx, "p", nil)
	require.ErrorIs(t, err, store.ErrNoDeadLetter)
	// One written otherwise (restored from a backup, by hand, or left by a
	// reset of an earlier build) is ahead of the checkpoint: refused, kept.
	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO projectord.dead_letters (projector, xid, position, stream_id, event_type, payload, error, attempts)
		VALUES ('p', $1, $2, 's', 'A', '{}', 'broken handler', 3)`, events[0].XID, events[0].Position)
	require.NoError(t, err)
	_, err = target.RequestRetry(tb.ctx, "p", nil)
	require.NoError(t, err)
	outs, err := target.RetryDeadLetters(tb.ctx, "p", cp2.Epoch, sink)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	require.ErrorIs(t, outs[0].Err, store.ErrAheadOfCheckpoint)
	rows, err := target.DeadLetters(tb.ctx, "p")
	require.NoError(t, err)
	require.Len(t, rows, 1, "a refused dead letter stays")
	require.Nil(t, rows[0].RetryRequestedAt, "its request is handled")
	// Then the replay reaches events[0].
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp2.Epoch, To: events[1].Cursor, Events: events[:2]}, sink))
	require.Equal(t, []int64{events[0].Position, events[1].Position}, appliedPositions(t, tb),
		"event %d applied twice: by the retry ahead of the checkpoint and by the replay", events[0].Position)
}

// After a reset the live loop dead-letters the same event again: there is
// one row for it (the reset deleted the old one; a unique index holds it),
// and `retry --position P` applies the event once.
func TestRetryAfterResetAppliesTheEventOnce(t *testing.T) {
	tb, target, sink, events, cp := operatorFixture(t)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: events[0].Cursor,
		DeadLetter: &store.DeadLetter{Event: events[0], Error: "broken handler", Attempts: 3}}, sink))
	_, err := target.Reset(tb.ctx, "p", `TRUNCATE applied`)
	require.NoError(t, err)
	cp2, err := target.Claim(tb.ctx, "p", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	// The handler is still broken: the replay dead-letters events[0] again.
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp2.Epoch, To: events[0].Cursor,
		DeadLetter: &store.DeadLetter{Event: events[0], Error: "broken handler", Attempts: 3}}, sink))

	// Fixed; the operator retries position P.
	asked, err := target.RequestRetry(tb.ctx, "p", &events[0].Position)
	require.NoError(t, err)
	outs, err := target.RetryDeadLetters(tb.ctx, "p", cp2.Epoch, sink)
	require.NoError(t, err)
	require.Equal(t, []int64{events[0].Position}, appliedPositions(t, tb),
		"one event, %d dead letters marked, %d applied", len(asked), len(outs))
}

// A bad source row (NULL created_at, metadata that is not JSON) never
// reaches a handler on the live path: it is poison before any statement
// runs. Its dead letter keeps NULL and the raw text; a retry must refuse it
// as it refuses data that is not JSON, not apply it with values the event
// never had (created_at 1970-01-01, metadata NULL).
func TestRetryRefusesABadSourceRow(t *testing.T) {
	tb, target, _, events, cp := operatorFixture(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE seen (position bigint, created_at timestamptz, metadata jsonb)`)
	require.NoError(t, err)
	sink, err := store.CompileSQLSink(map[string]string{
		"A": `INSERT INTO seen VALUES (@position, @created_at, @metadata)`,
	}, "")
	require.NoError(t, err)
	bad := events[0]
	bad.Metadata = []byte("not json")
	bad.CreatedAt = time.Time{}
	bad.Bad = &store.BadRowError{Problems: []store.ColumnProblem{
		{Field: "created_at", Column: "created_at", Null: true, Problem: "is NULL"},
		{Field: "metadata", Column: "metadata", Problem: "is not valid JSON"},
	}}
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: bad.Cursor,
		DeadLetter: &store.DeadLetter{Event: bad, Error: bad.Bad.Error(), Attempts: 1}}, sink))
	// On the live path the same event never reaches the handler.
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, From: bad.Cursor, To: bad.Cursor, Events: []store.Event{bad}}, sink)
	var ae *store.ApplyError
	require.ErrorAs(t, err, &ae)

	_, err = target.RequestRetry(tb.ctx, "p", &bad.Position)
	require.NoError(t, err)
	outs, err := target.RetryDeadLetters(tb.ctx, "p", cp.Epoch, sink)
	require.NoError(t, err)
	require.Len(t, outs, 1)
	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM seen`).Scan(&n))
	var got string
	_ = tb.pool.QueryRow(tb.ctx, `SELECT coalesce(created_at::text, 'NULL') || ' / ' || coalesce(metadata::text, 'NULL') FROM seen`).Scan(&got)
	require.Zero(t, n, "the bad row was applied with created_at / metadata = %s", got)
	require.Error(t, outs[0].Err)
}

// A handler whose failure would show only at COMMIT (a deferred
// constraint) is caught in its own savepoint (the retry sets constraints
// immediate): the other events apply, the failing one "failed again", and
// later nudges change nothing; no COMMIT failure blocks every retry.
func TestRetryChargesADeferredConstraintToItsEvent(t *testing.T) {
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE parent (id int PRIMARY KEY);
		INSERT INTO parent VALUES (1);
		CREATE TABLE child (position bigint NOT NULL, parent int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)`)
	require.NoError(t, err)
	tb.insert(t, "s", "A", `{"p": 1}`)
	tb.insert(t, "s", "A", `{"p": 2}`) // no parent 2: fails at COMMIT
	sink, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO child VALUES (@position, (@data->>'p')::int)`}, "")
	require.NoError(t, err)
	events, err := store.NewReader(tb.pool, tb.src, time.Second).Read(tb.ctx, store.Cursor{}, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Len(t, events, 2)
	target := store.NewTarget(tb.pool, 5*time.Second)
	cp, err := target.Claim(tb.ctx, "p", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	from := store.Cursor{}
	for _, e := range events {
		require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, From: from, To: e.Cursor,
			DeadLetter: &store.DeadLetter{Event: e, Error: "broken handler", Attempts: 3}}, sink))
		from = e.Cursor
	}
	_, err = target.RequestRetry(tb.ctx, "p", nil)
	require.NoError(t, err)

	for attempt := range 3 { // three nudges or leaders: always the same
		outs, err := target.RetryDeadLetters(tb.ctx, "p", cp.Epoch, sink)
		rows, lerr := target.DeadLetters(tb.ctx, "p")
		require.NoError(t, lerr)
		var n int
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM child`).Scan(&n))
		require.NoError(t, err, "attempt %d: the whole retry failed at COMMIT; %d rows still requested, %d applied", attempt, len(rows), n)
		if attempt == 0 {
			require.Len(t, outs, 2)
		} else {
			// The first attempt handled both requests: later nudges find
			// none and change nothing.
			require.Empty(t, outs)
		}
		require.Equal(t, 1, n, "the event with a parent applies")
		require.Len(t, rows, 1, "the other stays, failed again")
		require.Nil(t, rows[0].RetryRequestedAt, "its request is handled")
		require.Contains(t, rows[0].Error, "foreign key", "the new error is the deferred constraint's")
	}
}

// A retry that takes longer than the target's timeout in all (many rows,
// or slow handlers) progresses: it works in chunks, each its own
// transaction within the timeout, so rows are applied and the checkpoint
// row is held for one chunk at a time.
func TestRetryProgressesInChunksWithinTheTimeout(t *testing.T) {
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE slow (position bigint NOT NULL)`)
	require.NoError(t, err)
	const n = 30
	for range n {
		tb.insert(t, "s", "A", `{}`)
	}
	// 50 ms an event: 1.5 s for all, against a 1 s timeout.
	sink, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO slow SELECT @position FROM pg_sleep(0.05)`}, "")
	require.NoError(t, err)
	events, err := store.NewReader(tb.pool, tb.src, time.Second).Read(tb.ctx, store.Cursor{}, store.Filter{}, n, nil)
	require.NoError(t, err)
	require.Len(t, events, n)
	target := store.NewTarget(tb.pool, time.Second)
	cp, err := target.Claim(tb.ctx, "p", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	from := store.Cursor{}
	for _, e := range events {
		require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "p", Epoch: cp.Epoch, From: from, To: e.Cursor,
			DeadLetter: &store.DeadLetter{Event: e, Error: "broken handler", Attempts: 3}}, sink))
		from = e.Cursor
	}
	_, err = target.RequestRetry(tb.ctx, "p", nil)
	require.NoError(t, err)

	for attempt := range 3 {
		_, rerr := target.RetryDeadLetters(tb.ctx, "p", cp.Epoch, sink)
		var applied int
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM slow`).Scan(&applied))
		require.NotZero(t, applied, "attempt %d: nothing applied, every request still pending (%v)", attempt, rerr)
		if applied == n {
			return
		}
	}
}

// SetStatus keeps 'paused' except for a halt: the halt PGBackend.Claim
// records when a checkpoint's ordering cannot be converted shows as halted
// on a paused projector, since no replica can run it after the resume.
func TestHaltWinsOverPauseInStatus(t *testing.T) {
	tb, target, _, _, cp := operatorFixture(t)
	_, err := target.Pause(tb.ctx, "p", "test")
	require.NoError(t, err)
	require.NoError(t, target.SetStatus(tb.ctx, "p", cp.Epoch, store.StatusHalted, store.ErrOrderingChanged.Error()+": cannot convert"))
	c, _, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, store.StatusHalted, c.Status, "last_error %q", c.LastError)
}

// The periodic check of every leader on a target shares one read: within
// maxAge the answer is the snapshot's (a pause committed since shows only
// to a fresh read, as after its NOTIFY); past it, the next check reads
// every projector's requests at once.
func TestRequestsOfSharesOneReadPerTarget(t *testing.T) {
	tb, target, _, _, _ := operatorFixture(t)
	_, err := target.Claim(tb.ctx, "q", "n1", 0, store.OrderXID8)
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO projectord.dead_letters (projector, xid, position, stream_id, event_type, payload, error, attempts, retry_requested_at)
		VALUES ('q', '1', 1, 's', 'A', '{}', 'broken handler', 3, now())`)
	require.NoError(t, err)

	paused, retries, err := target.RequestsOf(tb.ctx, "p", time.Hour)
	require.NoError(t, err)
	require.False(t, paused)
	require.False(t, retries)
	_, err = target.Pause(tb.ctx, "q", "test")
	require.NoError(t, err)
	paused, retries, err = target.RequestsOf(tb.ctx, "q", time.Hour)
	require.NoError(t, err)
	require.False(t, paused, "answered from the snapshot taken for p")
	require.True(t, retries, "the snapshot holds q's retry request")
	paused, _, err = target.RequestsOf(tb.ctx, "q", 0)
	require.NoError(t, err)
	require.True(t, paused, "a fresh read sees the pause")
	paused, _, err = target.RequestsOf(tb.ctx, "q", time.Nanosecond)
	require.NoError(t, err)
	require.True(t, paused, "a snapshot past maxAge is read again")
}
