package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// The events these tests commit are made up, not read from the source: the
// checkpoint only checks that each batch starts where the last one ended.

// commitLog is what a target's commit observer saw.
type commitLog struct {
	mu      sync.Mutex
	groups  []int // batches of each grouped transaction, in order
	singles int
}

func (l *commitLog) observe(grouped bool, batches int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if grouped {
		l.groups = append(l.groups, batches)
		return
	}
	if batches != 1 {
		panic(fmt.Sprintf("a transaction alone reported %d batches", batches))
	}
	l.singles++
}

func (l *commitLog) seen() (groups []int, singles int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.groups), l.singles
}

type groupBundle struct {
	*testBundle
	sink *store.SQLSink
}

// setupGroups gives a database with the read model rm, into which every
// event inserts a row: its projector (the event's stream), its position and
// the transaction that inserted it.
func setupGroups(t *testing.T) *groupBundle {
	t.Helper()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE rm (projector text NOT NULL, position bigint NOT NULL,
		xid xid8 NOT NULL DEFAULT pg_current_xact_id(), PRIMARY KEY (projector, position))`)
	require.NoError(t, err)
	sink, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO rm (projector, position) VALUES (@stream_id, @position)`}, "")
	require.NoError(t, err)
	return &groupBundle{testBundle: tb, sink: sink}
}

func projectorName(i int) string { return fmt.Sprintf("p%03d", i) }

// batch is projector's round-th batch of size events: positions
// round*size+1 .. (round+1)*size, all in transaction round+1.
func batch(projector string, epoch int64, round, size int) store.CommitRequest {
	req := store.CommitRequest{Projector: projector, Epoch: epoch}
	if round > 0 {
		req.From = store.Cursor{XID: uint64(round), Position: int64(round * size)}
	}
	for j := range size {
		req.Events = append(req.Events, store.Event{Cursor: store.Cursor{XID: uint64(round + 1), Position: int64(round*size + j + 1)},
			StreamID: projector, Type: "A", Data: []byte(`{}`)})
	}
	req.To = req.Events[size-1].Cursor
	return req
}

func claimAll(t *testing.T, tb *groupBundle, target *store.Target, n int) []int64 {
	t.Helper()
	epochs := make([]int64, n)
	for i := range n {
		cp, err := target.Claim(tb.ctx, projectorName(i), "node-a", 0, store.OrderXID8)
		require.NoError(t, err)
		epochs[i] = cp.Epoch
	}
	return epochs
}

// commitAll commits reqs[i] from a goroutine each, in order: each is queued
// (queued reports the queue's length) before the next is sent.
func commitAll(t *testing.T, tb *groupBundle, target *store.Target, queued func(testing.TB, int), reqs []store.CommitRequest,
	sinks []*store.SQLSink, ctxs []context.Context) (errs []error, wait func()) {
	t.Helper()
	errs = make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		ctx := tb.ctx
		if ctxs != nil && ctxs[i] != nil {
			ctx = ctxs[i]
		}
		sink := tb.sink
		if sinks != nil && sinks[i] != nil {
			sink = sinks[i]
		}
		wg.Go(func() { errs[i] = target.Commit(ctx, req, sink) })
		queued(t, i+1)
	}
	return errs, wg.Wait
}

// requireLanded checks what of projector's batches is in the database:
// rows at positions 1..events, and a checkpoint there.
func requireLanded(t *testing.T, tb *groupBundle, target *store.Target, projector string, to store.Cursor, events int) {
	t.Helper()
	var n, sum int64
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*), coalesce(sum(position), 0) FROM rm WHERE projector = $1`, projector).Scan(&n, &sum))
	require.Equal(t, int64(events), n, "%s: rows", projector)
	require.Equal(t, int64(events*(events+1)/2), sum, "%s: positions", projector)
	c, ok, err := target.Load(tb.ctx, projector)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, to, c.Cursor, "%s: checkpoint", projector)
	require.Equal(t, int64(events), c.EventsApplied, "%s: events applied", projector)
}

// transactions returns, for every transaction that wrote rm, how many
// projectors' rows it wrote, sorted.
func transactions(t *testing.T, tb *groupBundle) []int {
	t.Helper()
	rows, err := tb.pool.Query(tb.ctx, `SELECT count(DISTINCT projector) FROM rm GROUP BY xid ORDER BY 1`)
	require.NoError(t, err)
	var out []int
	for rows.Next() {
		var n int
		require.NoError(t, rows.Scan(&n))
		out = append(out, n)
	}
	require.NoError(t, rows.Err())
	return out
}

// Many projectors committing at once into one database share
// transactions, and each grouped transaction is one transaction of
// PostgreSQL's: the rows show as many transactions, of as many
// projectors each, as the observer reported. Everything lands exactly.
// Off, every batch has its own transaction.
func TestGroupCommitManyProjectors(t *testing.T) {
	t.Parallel()
	const projectors, rounds, size = 50, 20, 3
	for _, grouping := range []bool{true, false} {
		t.Run(fmt.Sprintf("grouping=%v", grouping), func(t *testing.T) {
			t.Parallel()
			tb := setupGroups(t)
			target := store.NewTarget(tb.pool, 30*time.Second)
			var log commitLog
			target.ObserveCommits(log.observe)
			if grouping {
				target.EnableGroupCommit()
			}
			epochs := claimAll(t, tb, target, projectors)

			errs := make(chan error, projectors)
			var wg sync.WaitGroup
			for i := range projectors {
				wg.Go(func() {
					for r := range rounds {
						if err := target.Commit(tb.ctx, batch(projectorName(i), epochs[i], r, size), tb.sink); err != nil {
							errs <- fmt.Errorf("%s round %d: %w", projectorName(i), r, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			for i := range projectors {
				requireLanded(t, tb, target, projectorName(i), store.Cursor{XID: rounds, Position: rounds * size}, rounds*size)
			}

			groups, singles := log.seen()
			batches := singles
			for _, g := range groups {
				batches += g
			}
			require.Equal(t, projectors*rounds, batches, "every commit is reported once")
			want := slices.Clone(groups)
			for range singles {
				want = append(want, 1)
			}
			slices.Sort(want)
			require.Equal(t, want, transactions(t, tb), "the observer's transactions are PostgreSQL's")
			if !grouping {
				require.Empty(t, groups)
				return
			}
			require.Less(t, len(groups)+singles, projectors*rounds, "fewer transactions than batches")
			require.Greater(t, slices.Max(groups), 1)
			t.Logf("%d batches in %d grouped transactions (largest %d) and %d alone", projectors*rounds, len(groups), slices.Max(groups), singles)
		})
	}
}

// A member whose handler fails (a unique violation on its second event)
// gets what a solo commit gives, and nothing of its batch lands; the rest
// of its group commits.
func TestGroupCommitFailingMemberDoesNotRollBackTheOthers(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, bad = 8, 3
	epochs := claimAll(t, tb, target, n)
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO rm (projector, position) VALUES ($1, 2)`, projectorName(bad))
	require.NoError(t, err)

	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	wait()

	var applyErr *store.ApplyError
	require.True(t, errors.As(errs[bad], &applyErr), "got %v", errs[bad])
	require.Equal(t, 1, applyErr.Index)
	var pgErr *pgconn.PgError
	require.True(t, errors.As(errs[bad], &pgErr))
	require.Equal(t, "23505", pgErr.Code)
	// Exactly what the same batch gets in a transaction of its own.
	solo := store.NewTarget(tb.pool, 30*time.Second).Commit(tb.ctx, reqs[bad], tb.sink)
	require.Equal(t, solo.Error(), errs[bad].Error())

	for i := range n {
		if i == bad {
			continue
		}
		require.NoError(t, errs[i], projectorName(i))
		requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
	}
	var rows int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm WHERE projector = $1`, projectorName(bad)).Scan(&rows))
	require.Equal(t, 1, rows, "only the row that was there before")
	c, _, err := target.Load(tb.ctx, projectorName(bad))
	require.NoError(t, err)
	require.True(t, c.Cursor.IsZero())
	groups, singles := log.seen()
	require.Equal(t, []int{n - 1}, groups, "the others, committed together without it")
	require.Zero(t, singles)
}

// A deposed member (another claim bumped its epoch while its batch was
// queued) alone is fenced.
func TestGroupCommitFencesOnlyTheDeposedMember(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, deposed = 8, 5
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	_, err := target.Claim(tb.ctx, projectorName(deposed), "node-b", 0, store.OrderXID8)
	require.NoError(t, err)
	release()
	wait()

	require.ErrorIs(t, errs[deposed], store.ErrFenced)
	for i := range n {
		if i != deposed {
			require.NoError(t, errs[i], projectorName(i))
			requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
		}
	}
	requireLanded(t, tb, target, projectorName(deposed), store.Cursor{}, 0)
	groups, singles := log.seen()
	require.Equal(t, []int{n - 1}, groups)
	require.Zero(t, singles)
}

// A deferred constraint fails at COMMIT, which names nobody: every member
// commits alone, so the one that broke it fails exactly as it would alone
// and the others commit.
func TestGroupCommitDeferredConstraint(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE d (k text, CONSTRAINT d_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED)`)
	require.NoError(t, err)
	dup, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO d (k) VALUES (@event_type)`}, "")
	require.NoError(t, err)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, bad = 6, 2
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	sinks := make([]*store.SQLSink, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 2)
	}
	sinks[bad] = dup
	errs, wait := commitAll(t, tb, target, queued, reqs, sinks, nil)
	release()
	wait()

	require.Error(t, errs[bad])
	var applyErr *store.ApplyError
	require.False(t, errors.As(errs[bad], &applyErr), "COMMIT names no event: %v", errs[bad])
	var pgErr *pgconn.PgError
	require.True(t, errors.As(errs[bad], &pgErr))
	require.Equal(t, "23505", pgErr.Code)
	solo := store.NewTarget(tb.pool, 30*time.Second).Commit(tb.ctx, reqs[bad], dup)
	require.Equal(t, solo.Error(), errs[bad].Error())
	var rows int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM d`).Scan(&rows))
	require.Zero(t, rows)
	requireLanded(t, tb, target, projectorName(bad), store.Cursor{}, 0)
	for i := range n {
		if i != bad {
			require.NoError(t, errs[i], projectorName(i))
			requireLanded(t, tb, target, projectorName(i), reqs[i].To, 2)
		}
	}
	groups, singles := log.seen()
	require.Empty(t, groups)
	require.Equal(t, n-1, singles)
}

// A member whose context ends while it waits for its group fails (at once,
// alone), and nothing of it lands; the group commits without it.
func TestGroupCommitMemberCancelledBeforeItsGroup(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, gone = 5, 2
	epochs := claimAll(t, tb, target, n)
	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	ctxs := make([]context.Context, n)
	ctx, cancel := context.WithCancel(tb.ctx)
	ctxs[gone] = ctx
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, ctxs)
	cancel()
	release()
	wait()

	require.ErrorIs(t, errs[gone], context.Canceled)
	requireLanded(t, tb, target, projectorName(gone), store.Cursor{}, 0)
	for i := range n {
		if i != gone {
			require.NoError(t, errs[i], projectorName(i))
			requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
		}
	}
	groups, singles := log.seen()
	require.Equal(t, []int{n - 1}, groups)
	require.Zero(t, singles)
}

// Two batches of one projector never share a group: the second would see
// the first's checkpoint move. It waits for the next group (here alone,
// so it commits alone) and commits after the first.
func TestGroupCommitKeepsOneBatchPerProjector(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	epochs := claimAll(t, tb, target, 3)
	reqs := []store.CommitRequest{
		batch(projectorName(0), epochs[0], 0, 3),
		batch(projectorName(0), epochs[0], 1, 3),
		batch(projectorName(1), epochs[1], 0, 3),
		batch(projectorName(2), epochs[2], 0, 3),
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	wait()
	for i, err := range errs {
		require.NoError(t, err, i)
	}
	requireLanded(t, tb, target, projectorName(0), reqs[1].To, 6)
	groups, singles := log.seen()
	require.Equal(t, []int{3}, groups)
	require.Equal(t, 1, singles)
}

// A group holds at most 256 batches and, past its first batch, 10,000
// events.
func TestGroupCommitCapsItsGroups(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	t.Run("batches", func(t *testing.T) {
		// Four connections: two parts per take, on any machine.
		target := store.NewTarget(poolOf(t, tb, 4), 30*time.Second)
		var log commitLog
		target.ObserveCommits(log.observe)
		queued, release := store.HoldGroups(target)
		const n = 300
		epochs := claimAll(t, tb, target, n)
		reqs := make([]store.CommitRequest, n)
		for i := range n {
			// No events: the checkpoint moves alone.
			reqs[i] = store.CommitRequest{Projector: projectorName(i), Epoch: epochs[i], To: store.Cursor{XID: 1, Position: 1}}
		}
		errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
		release()
		wait()
		for i, err := range errs {
			require.NoError(t, err, i)
		}
		// Each take is committed in two parts, which run side by side.
		groups, singles := log.seen()
		slices.Sort(groups)
		require.Equal(t, []int{(n - 256) / 2, (n - 256) / 2, 128, 128}, groups, "takes of 256 and %d, in halves", n-256)
		require.Zero(t, singles)
	})
	t.Run("events", func(t *testing.T) {
		target := store.NewTarget(tb.pool, 30*time.Second)
		var log commitLog
		target.ObserveCommits(log.observe)
		queued, release := store.HoldGroups(target)
		epochs := make([]int64, 3)
		reqs := make([]store.CommitRequest, 3)
		sinks := make([]*store.SQLSink, 3)
		none, err := store.CompileSQLSink(map[string]string{"B": `SELECT 1`}, "")
		require.NoError(t, err)
		for i := range 3 {
			// Events no handler runs for: counted, not sent.
			name := "big" + projectorName(i)
			cp, err := target.Claim(tb.ctx, name, "node-a", 0, store.OrderXID8)
			require.NoError(t, err)
			epochs[i] = cp.Epoch
			reqs[i], sinks[i] = batch(name, epochs[i], 0, 4000), none
		}
		errs, wait := commitAll(t, tb, target, queued, reqs, sinks, nil)
		release()
		wait()
		for i, err := range errs {
			require.NoError(t, err, i)
		}
		groups, singles := log.seen()
		require.Equal(t, []int{2}, groups, "8,000 events, and 12,000 would be too many")
		require.Equal(t, 1, singles)
	})
}

// A member waiting for a lock in its group gives up on the group's share
// of its time (lock_timeout is half of the group's deadline, itself half
// of the member's time), so the others commit; alone it keeps the rest of
// its time, and its commit goes through once the lock is free.
func TestGroupCommitMemberWaitingForALockGoesAlone(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	// 20 s: the group's lock_timeout is 5 s, the member's own 10 s.
	target := store.NewTarget(tb.pool, 20*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, blocked = 4, 1
	epochs := claimAll(t, tb, target, n)
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	// Its first event's row, inserted and not committed: the member's
	// insert waits for this transaction.
	_, err = tx.Exec(tb.ctx, `INSERT INTO rm (projector, position) VALUES ($1, 1)`, projectorName(blocked))
	require.NoError(t, err)

	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	release()
	testsupport.Until(t, "the others' group", time.Minute, func() bool {
		groups, _ := log.seen()
		return slices.Equal(groups, []int{n - 1})
	})
	for i := range n {
		if i != blocked {
			requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
		}
	}
	// The member, alone now, waits for the lock again.
	testsupport.Until(t, "the member's own commit waiting for the lock", time.Minute, func() bool {
		var waiting int
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting))
		return waiting == 1
	})
	require.NoError(t, tx.Rollback(tb.ctx))
	wait()
	for i, err := range errs {
		require.NoError(t, err, i)
	}
	requireLanded(t, tb, target, projectorName(blocked), reqs[blocked].To, 3)
	_, singles := log.seen()
	require.Equal(t, 1, singles)
}

// Batches that arrive while the committer commits a batch that was alone
// in the queue wait for it, and then share one transaction: a committer
// free again at once would find each of them alone in turn.
func TestGroupCommitBatchesArrivingDuringALoneCommitShareTheNext(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued := store.WatchGroups(target)
	const n = 6
	epochs := claimAll(t, tb, target, n)
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(context.Background()) }()
	_, err = tx.Exec(tb.ctx, `INSERT INTO rm (projector, position) VALUES ($1, 1)`, projectorName(0))
	require.NoError(t, err)

	reqs := make([]store.CommitRequest, n)
	errs := make([]error, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = target.Commit(tb.ctx, reqs[0], tb.sink) })
	testsupport.Until(t, "the lone batch waiting for the lock", time.Minute, func() bool {
		var waiting int
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting))
		return waiting == 1
	})
	for i := 1; i < n; i++ {
		wg.Go(func() { errs[i] = target.Commit(tb.ctx, reqs[i], tb.sink) })
		queued(t, i)
	}
	require.NoError(t, tx.Rollback(tb.ctx))
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, i)
		requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
	}
	groups, singles := log.seen()
	require.Equal(t, []int{n - 1}, groups)
	require.Equal(t, 1, singles)
}

// A group of at least 32 batches is committed in parts, side by side, each
// its own transaction of about as many events. A part's failing member
// (a unique violation) and a deposed one in the other part each get what
// they would alone; the rest of each part commits, so nothing of anyone
// else's is lost or applied twice.
func TestGroupCommitLargeGroupsCommitInParts(t *testing.T) {
	t.Parallel()
	tb := setupGroups(t)
	target := store.NewTarget(tb.pool, 30*time.Second)
	var log commitLog
	target.ObserveCommits(log.observe)
	queued, release := store.HoldGroups(target)
	const n, bad, deposed = 40, 4, 33
	epochs := claimAll(t, tb, target, n)
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO rm (projector, position) VALUES ($1, 2)`, projectorName(bad))
	require.NoError(t, err)
	reqs := make([]store.CommitRequest, n)
	for i := range n {
		reqs[i] = batch(projectorName(i), epochs[i], 0, 3)
	}
	errs, wait := commitAll(t, tb, target, queued, reqs, nil, nil)
	_, err = target.Claim(tb.ctx, projectorName(deposed), "node-b", 0, store.OrderXID8)
	require.NoError(t, err)
	release()
	wait()

	var applyErr *store.ApplyError
	require.True(t, errors.As(errs[bad], &applyErr), "got %v", errs[bad])
	require.Equal(t, 1, applyErr.Index)
	require.ErrorIs(t, errs[deposed], store.ErrFenced)
	for i := range n {
		if i != bad && i != deposed {
			require.NoError(t, errs[i], projectorName(i))
			requireLanded(t, tb, target, projectorName(i), reqs[i].To, 3)
		}
	}
	requireLanded(t, tb, target, projectorName(deposed), store.Cursor{}, 0)
	var rows int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm WHERE projector = $1`, projectorName(bad)).Scan(&rows))
	require.Equal(t, 1, rows, "only the row that was there before")

	// Two parts of 20, each without its culprit: 19 and 19 batches in two
	// transactions, as PostgreSQL's rows show.
	groups, singles := log.seen()
	slices.Sort(groups)
	require.Equal(t, []int{n/2 - 1, n/2 - 1}, groups)
	require.Zero(t, singles)
	require.Equal(t, []int{1, n/2 - 1, n/2 - 1}, transactions(t, tb), "the row that was there before, and the two parts")
}
