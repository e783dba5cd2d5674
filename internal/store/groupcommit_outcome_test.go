package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgcluster"
)

// A group whose COMMIT outlasts the group's deadline may still commit: the
// client gives up and closes the connection, and PostgreSQL goes on. Here
// the group's transaction waits at COMMIT for a synchronous standby that
// never answers (one member's handler asks for it; statement_timeout does
// not bound that wait), and the cancel pgx sends as it closes the
// connection ends the wait with the transaction "committed locally". Every
// member's batch is then in the database, so every member must be told it
// committed: told to commit alone instead, each met its own rows (23505)
// or its own checkpoint move (fenced), and its leader would have retried,
// poisoned or stepped down over a batch that went through.
//
// On a cluster of its own: synchronous_standby_names is the server's.
func TestGroupCommitThatCommitsAfterItsDeadlineIsReportedCommitted(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Settings: map[string]string{"synchronous_standby_names": "nobody"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cl.Close() })
	url := cl.URL("postgres")
	pool, err := pgxpool.New(ctx, url)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = store.Migrate(ctx, pool, "test")
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE rm (projector text NOT NULL, position bigint NOT NULL,
		xid xid8 NOT NULL DEFAULT pg_current_xact_id(), PRIMARY KEY (projector, position))`)
	require.NoError(t, err)
	sink, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO rm (projector, position) VALUES (@stream_id, @position)`}, "")
	require.NoError(t, err)
	// The cluster runs with synchronous_commit off; this handler turns it
	// on for the rest of its transaction, so COMMIT waits for the standby.
	waits, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO rm (projector, position)
		SELECT @stream_id, @position FROM set_config('synchronous_commit', 'on', true)`}, "")
	require.NoError(t, err)
	tb := &groupBundle{testBundle: &testBundle{ctx: ctx, url: url, pool: pool}, sink: sink}

	// 4 s: the group's deadline is 2 s.
	target := store.NewTarget(pool, 4*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n = 3
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	sinks := make([]*store.SQLSink, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	sinks[0] = waits
	errs, wait := commitAll(t, tb, target, queued, reqs, sinks, nil)
	release()
	wait()

	for i := range n {
		require.NoError(t, errs[i], "%s: its batch is in the database", projectorName(i))
		requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
	}
	require.Equal(t, []int{n}, transactions(t, tb), "one transaction, the group's, wrote every row")
	groups, singles := log.seen()
	require.Equal(t, []int{n}, groups)
	require.Zero(t, singles)
}

// What a group cut short learns of its transaction: committed, aborted,
// or, while the backend the client gave up on still runs it, aborted once
// that backend is terminated (a backend is matched by its pid and its
// transaction; one running another transaction is left alone).
func TestGroupCommitLearnsItsOutcome(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	xact := func(conn *pgxpool.Conn) (xid uint64) {
		t.Helper()
		require.NoError(t, conn.QueryRow(tb.ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid))
		return xid
	}

	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	var committedXID uint64
	require.NoError(t, tx.QueryRow(tb.ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&committedXID))
	require.NoError(t, tx.Commit(tb.ctx))
	ok, err := store.LearnOutcome(tb.ctx, target, committedXID, 0)
	require.NoError(t, err)
	require.True(t, ok, "committed")

	tx, err = tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	var abortedXID uint64
	require.NoError(t, tx.QueryRow(tb.ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&abortedXID))
	require.NoError(t, tx.Rollback(tb.ctx))
	ok, err = store.LearnOutcome(tb.ctx, target, abortedXID, 0)
	require.NoError(t, err)
	require.False(t, ok, "aborted")

	// Left in progress on a connection of its own, as by a client that
	// stopped reading; another backend runs another transaction.
	held, err := tb.pool.Acquire(tb.ctx)
	require.NoError(t, err)
	defer held.Release()
	other, err := tb.pool.Acquire(tb.ctx)
	require.NoError(t, err)
	defer other.Release()
	for _, c := range []*pgxpool.Conn{held, other} {
		_, err = c.Exec(tb.ctx, "BEGIN")
		require.NoError(t, err)
	}
	heldXID, otherXID := xact(held), xact(other)
	require.NotEqual(t, heldXID, otherXID)
	// The other backend's pid with the held transaction matches no
	// backend: nothing is terminated, and the outcome stays unknown until
	// the context ends.
	short, cancel := context.WithTimeout(tb.ctx, time.Second)
	defer cancel()
	_, err = store.LearnOutcome(short, target, heldXID, other.Conn().PgConn().PID())
	require.ErrorIs(t, err, context.DeadlineExceeded)
	for _, c := range []*pgxpool.Conn{held, other} {
		_, err = c.Exec(tb.ctx, "SELECT 1")
		require.NoError(t, err, "no backend was terminated")
	}
	bounded, cancelBounded := context.WithTimeout(tb.ctx, time.Minute)
	defer cancelBounded()
	ok, err = store.LearnOutcome(bounded, target, heldXID, held.Conn().PgConn().PID())
	require.NoError(t, err)
	require.False(t, ok, "terminated in progress: aborted")
	_, err = held.Exec(tb.ctx, "SELECT 1")
	require.Error(t, err, "the backend that ran it was terminated")
	var status string
	require.NoError(t, other.QueryRow(tb.ctx, `SELECT pg_xact_status($1::xid8)`, otherXID).Scan(&status))
	require.Equal(t, "in progress", status, "the other transaction runs on")
}
