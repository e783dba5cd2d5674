package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/store/pgtest"
)

// Review of a35cf14 (the commit bounded by the request's deadline). The
// loop's send used to give PGBackend.Commit a context that ended at
// CommitTimeout, which bounded supersededCommit's question too (it asks
// only with time left, and under that context). Now send gives the lease's
// context and the deadline in the request: PGBackend.Commit skips the
// question only when the deadline has passed, and otherwise asks under the
// lease's context plus statusTimeout (5 s). A versioned projector's
// commit that fails before its deadline (the server's lock_timeout, half
// of it, or statement_timeout, three quarters) and whose question then
// waits (the server stops answering, or, as here, the live table is
// locked) outlives CommitTimeout by up to 5 s, which send promises never
// to do (rule 6).
func TestReviewCommitByDeadlineBoundsTheSupersededQuestion(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pgtest.NewDatabase(t))
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	// The query timeout is far longer than the commit's: only the
	// request's deadline can bound it.
	target := store.NewTarget(pool, 30*time.Second)
	v := store.Version{Name: "p", Version: 1}
	_, err = target.EnsureVersion(ctx, v)
	require.NoError(t, err)
	cp, err := target.Claim(ctx, v.Key(), "n", 0, store.OrderXID8)
	require.NoError(t, err)
	b := runner.NewPGBackend(runner.PGBackendConfig{Node: "n"})
	b.AddProjector(v.Key(), target, nil)
	b.AddVersion(v.Key(), v)
	require.True(t, b.CommitsByDeadline(v.Key()))

	// advance() waits for the live row's share, and the question for the
	// live version waits behind the same lock.
	lock, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(context.WithoutCancel(ctx)) }()
	_, err = lock.Exec(ctx, `LOCK TABLE projectord.live_versions IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	const commitTimeout = time.Second
	// The control: bounded by its context, as send bounds a backend that
	// does not honour the deadline (and as it bounded every commit before
	// a35cf14), the same commit ends at its deadline.
	cctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	begun := time.Now()
	err = b.Commit(cctx, store.CommitRequest{Projector: v.Key(), Epoch: cp.Epoch, To: store.Cursor{Position: 1}})
	cancel()
	require.Error(t, err, "committed under the lock")
	require.Less(t, time.Since(begun), commitTimeout+time.Second, "bounded by its context: %v", err)

	begun = time.Now()
	// As send makes it with byDeadline: the lease's context, no timer.
	req := store.CommitRequest{Projector: v.Key(), Epoch: cp.Epoch, To: store.Cursor{Position: 1}, Deadline: begun.Add(commitTimeout)}
	err = b.Commit(context.Background(), req)
	took := time.Since(begun)
	require.Error(t, err, "committed under the lock")
	require.Less(t, took, commitTimeout+time.Second,
		"a commit with a %s deadline took %s (%v): the superseded question ran past the deadline", commitTimeout, took, err)
}
