package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// move is one member of an advance_group call.
type move struct {
	projector string
	epoch     int64
	from, to  store.Cursor
	events    int64
}

// advanceGroup calls projectord.advance_group for moves inside tx.
func advanceGroup(ctx context.Context, tx pgx.Tx, moves []move) error {
	var (
		names                  []string
		epochs, fromP, toP, ev []int64
		fromX, toX             []uint64
	)
	for _, m := range moves {
		names = append(names, m.projector)
		epochs = append(epochs, m.epoch)
		fromX, fromP = append(fromX, m.from.XID), append(fromP, m.from.Position)
		toX, toP = append(toX, m.to.XID), append(toP, m.to.Position)
		ev = append(ev, m.events)
	}
	_, err := tx.Exec(ctx, `SELECT projectord.advance_group($1, $2, $3, $4, $5, $6, $7)`, names, epochs, fromX, fromP, toX, toP, ev)
	return err
}

// requireRefused checks that err is advance_group refusing member k
// (from 1).
func requireRefused(t *testing.T, err error, k string) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "a refusal from PostgreSQL: %v", err)
	require.Equal(t, "PJ003", pgErr.Code, pgErr.Message)
	require.Equal(t, k, pgErr.Detail, pgErr.Message)
}

// advance_group moves every member's checkpoint under advance()'s rules,
// or refuses the whole statement naming the first member it cannot move:
// deposed (an older epoch), moved on (another cursor), paused, or named
// twice; and then nothing it did stays.
func TestAdvanceGroupMovesAllOrNamesTheMemberRefused(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	const n = 5
	epochs := claimAll(t, tb, target, n)
	moves := func() []move {
		out := make([]move, n)
		for i := range n {
			out[i] = move{projector: projectorName(i), epoch: epochs[i], to: store.Cursor{XID: 7, Position: int64(10 + i)}, events: int64(i + 1)}
		}
		return out
	}
	unmoved := func() {
		t.Helper()
		for i := range n {
			c, ok, err := target.Load(tb.ctx, projectorName(i))
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, store.Cursor{}, c.Cursor, "%s moved by a refused group", projectorName(i))
			require.Zero(t, c.EventsApplied)
		}
	}
	refused := func(ms []move, k string) {
		t.Helper()
		err := pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error { return advanceGroup(tb.ctx, tx, ms) })
		requireRefused(t, err, k)
		unmoved()
	}

	ms := moves()
	ms[2].epoch-- // deposed
	refused(ms, "3")
	ms = moves()
	ms[4].from = store.Cursor{XID: 1, Position: 1} // not where the checkpoint is
	refused(ms, "5")
	ms = moves()
	ms[0].projector = "nobody" // no such checkpoint
	refused(ms, "1")
	// p003 twice: the UPDATE moves its row once, for either, and the
	// other is named.
	ms = append(moves(), moves()[3])
	err := pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error { return advanceGroup(tb.ctx, tx, ms) })
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "PJ003", pgErr.Code)
	require.Contains(t, []string{"4", "6"}, pgErr.Detail, pgErr.Message)
	unmoved()
	ms = moves()
	ms[1].epoch, ms[3].epoch = 0, 0 // two refusals: the first is named
	refused(ms, "2")

	_, err = target.Pause(tb.ctx, projectorName(1), "test")
	require.NoError(t, err)
	refused(moves(), "2")
	_, err = target.Resume(tb.ctx, projectorName(1))
	require.NoError(t, err)

	require.NoError(t, pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error { return advanceGroup(tb.ctx, tx, moves()) }))
	for i, m := range moves() {
		c, ok, err := target.Load(tb.ctx, m.projector)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, m.to, c.Cursor, m.projector)
		require.Equal(t, int64(i+1), c.EventsApplied, m.projector)
	}
}

// A member of an older version than the live one is refused by
// advance_group as by advance(), and a group holding a member's share of
// the live row keeps a promotion waiting until it commits, so that the
// member's batch lands before the promotion, never after.
func TestAdvanceGroupHoldsTheLiveVersion(t *testing.T) {
	tb := setup(t)
	target := store.NewTarget(tb.pool, 5*time.Second)
	v1, v2, e1, e2 := versionSetup(t, tb, target)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: v2.Key(), Epoch: e2, To: store.Cursor{Position: 5}}, nil))
	other, err := target.Claim(tb.ctx, "other", "n", 0, store.OrderXID8)
	require.NoError(t, err)

	// In flight: the group's advance_group ran, its COMMIT has not.
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(tb.ctx)) }()
	require.NoError(t, advanceGroup(tb.ctx, tx, []move{
		{projector: "other", epoch: other.Epoch, to: store.Cursor{Position: 1}, events: 1},
		{projector: v1.Key(), epoch: e1, to: store.Cursor{Position: 1}, events: 1},
	}))
	done := make(chan error, 1)
	go func() { _, err := target.Promote(context.Background(), v2, e2); done <- err }()
	waitForPromotionLockWait(t, tb)
	select {
	case err := <-done:
		t.Fatalf("promotion committed while a group held version 1's share of the live row: %v", err)
	default:
	}
	require.NoError(t, tx.Commit(tb.ctx))
	require.NoError(t, <-done)
	c, _, err := target.Load(tb.ctx, v1.Key())
	require.NoError(t, err)
	require.Equal(t, store.Cursor{Position: 1}, c.Cursor, "version 1's batch landed before the promotion")

	// After the promotion, a group with version 1 in it is refused, naming it.
	err = pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error {
		return advanceGroup(tb.ctx, tx, []move{
			{projector: "other", epoch: other.Epoch, from: store.Cursor{Position: 1}, to: store.Cursor{Position: 2}, events: 1},
			{projector: v1.Key(), epoch: e1, from: store.Cursor{Position: 1}, to: store.Cursor{Position: 2}, events: 1},
		})
	})
	requireRefused(t, err, "2")
	c, _, err = target.Load(tb.ctx, "other")
	require.NoError(t, err)
	require.Equal(t, store.Cursor{Position: 1}, c.Cursor, "the refused group moved nobody")
}

// In a group, a paused member and a member of a superseded version are
// each sent to commit alone, where they meet their own refusal (ErrPaused,
// ErrSuperseded); the others commit together, in one transaction.
func TestGroupCommitRefusesOnlyThePausedAndTheSuperseded(t *testing.T) {
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	v1, v2, e1, e2 := versionSetup(t, tb.testBundle, target)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: v2.Key(), Epoch: e2, To: store.Cursor{Position: 5}}, nil))
	promoted, err := target.Promote(tb.ctx, v2, e2)
	require.NoError(t, err)
	require.True(t, promoted)

	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, paused = 6, 2
	epochs := claimAll(t, tb, target, n)
	_, err = target.Pause(tb.ctx, projectorName(paused), "test")
	require.NoError(t, err)
	reqs := make([]store.CommitRequest, 0, n+1)
	for i := range n {
		reqs = append(reqs, batch(projectorName(i), epochs[i], 0, 3))
	}
	// Version 1's batch, fourth in the queue, moves only its checkpoint.
	reqs = slices.Insert(reqs, 3, store.CommitRequest{Projector: v1.Key(), Epoch: e1, To: store.Cursor{Position: 1}})
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	wait()

	require.ErrorIs(t, errs[paused], store.ErrPaused)
	require.ErrorIs(t, errs[3], store.ErrSuperseded)
	for i, req := range reqs {
		if i == paused || i == 3 {
			continue
		}
		require.NoError(t, errs[i], req.Projector)
		requireLanded(t, tb, target, req.Projector, req.To, 3)
	}
	requireLanded(t, tb, target, projectorName(paused), store.Cursor{}, 0)
	groups, singles := log.seen()
	require.Equal(t, []int{n - 1}, groups, "one group of the rest, after each refused member left it")
	require.Zero(t, singles)
	require.Equal(t, []int{n - 1}, transactions(t, tb))
}

// A group waiting for a member's live row (a promotion holds it FOR
// UPDATE to its commit) until the group's lock_timeout names that member,
// as a wait for its checkpoint row does: it commits alone, and the others
// commit as a group without waiting for it.
func TestAdvanceGroupLockWaitOnALiveRowBlamesThatMember(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	// 20 s: the group's context is 10 s, its lock_timeout 5 s; the
	// blamed member's own commit then waits up to 10 s, far longer than
	// the others' group needs to land.
	target := store.NewTarget(tb.pool, 20*time.Second)
	v1, _, e1, _ := versionSetup(t, tb.testBundle, target)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n = 4
	epochs := claimAll(t, tb, target, n)
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.WithoutCancel(tb.ctx)) }()
	_, err = tx.Exec(tb.ctx, `SELECT 1 FROM projectord.live_versions WHERE name = $1 FOR UPDATE`, v1.Name)
	require.NoError(t, err)

	reqs := make([]store.CommitRequest, 0, n+1)
	for i := range n {
		reqs = append(reqs, batch(projectorName(i), epochs[i], 0, 3))
	}
	const held = 2
	reqs = slices.Insert(reqs, held, store.CommitRequest{Projector: v1.Key(), Epoch: e1, To: store.Cursor{Position: 1}})
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	// The observer hears of the group after its COMMIT returns, which
	// is after the rows are visible: wait for both.
	testsupport.Until(t, "the others landed and their commit was reported", time.Minute, func() bool {
		if groups, singles := log.seen(); len(groups)+singles == 0 {
			return false
		}
		for i, req := range reqs {
			if i == held {
				continue
			}
			c, ok, err := target.Load(tb.ctx, req.Projector)
			if err != nil || !ok || c.Cursor != req.To {
				return false
			}
		}
		return true
	})
	groups, singles := log.seen()
	require.Equal(t, []int{n}, groups, "the others commit in one group once the waiting member is named")
	require.Zero(t, singles, "nobody but the waiting member commits alone (it is still waiting)")
	c, _, err := target.Load(tb.ctx, v1.Key())
	require.NoError(t, err)
	require.Equal(t, store.Cursor{}, c.Cursor, "the member waiting for its live row has not moved")
	require.NoError(t, tx.Rollback(tb.ctx))
	wait()
	for i, err := range errs {
		require.NoError(t, err, reqs[i].Projector)
	}
	c, _, err = target.Load(tb.ctx, v1.Key())
	require.NoError(t, err)
	require.Equal(t, store.Cursor{Position: 1}, c.Cursor, "alone, once the row was free, it committed")
}
