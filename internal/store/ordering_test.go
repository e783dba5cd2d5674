package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
)

// outOfOrder commits two events so that xid order and position order
// disagree: the one with the smaller xid gets the larger position. It
// returns them in position order.
func (tb *testBundle) outOfOrder(t *testing.T, table string) (first, second store.Cursor) {
	t.Helper()
	early, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer early.Rollback(tb.ctx)
	_, err = early.Exec(tb.ctx, `SELECT pg_current_xact_id()`) // takes its xid now
	require.NoError(t, err)
	insert := `INSERT INTO ` + table + ` (stream_id, stream_version, event_type, data) VALUES ($1, 1, 'A', '{}')
		RETURNING transaction_id, global_position`
	require.NoError(t, tb.pool.QueryRow(tb.ctx, insert, "late-xid").Scan(&first.XID, &first.Position))
	require.NoError(t, early.QueryRow(tb.ctx, insert, "early-xid").Scan(&second.XID, &second.Position))
	require.NoError(t, early.Commit(tb.ctx))
	require.Less(t, second.XID, first.XID)
	require.Less(t, first.Position, second.Position)
	return first, second
}

// commitTo moves the projector's checkpoint to c under ord, as a leader would.
func commitTo(t *testing.T, ctx context.Context, target *store.Target, projector string, ord store.Ordering, c store.Cursor) store.Checkpoint {
	t.Helper()
	cp, err := target.Claim(ctx, projector, "node", 0, ord)
	require.NoError(t, err)
	require.NoError(t, target.Commit(ctx, store.CommitRequest{Projector: projector, Epoch: cp.Epoch, From: cp.Cursor, To: c}, nil))
	cp, ok, err := target.Load(ctx, projector)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, ord, cp.Ordering)
	return cp
}

func TestConvertPositionCheckpointToXID8KeepsEveryEventAtOrBelowItDone(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE legacy (global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		stream_id text, stream_version bigint, event_type text, data jsonb, metadata jsonb, created_at timestamptz DEFAULT now())`)
	require.NoError(t, err)
	_, err = tb.pool.Exec(tb.ctx, `INSERT INTO legacy (stream_id, stream_version, event_type, data) SELECT 'old-' || g, 1, 'A', '{}' FROM generate_series(1, 3) g`)
	require.NoError(t, err)
	legacy := store.Source{Table: "public.legacy", Columns: store.NativeColumns}
	for _, step := range store.PrepareSQL(legacy, false, "") {
		_, err := tb.pool.Exec(tb.ctx, step.SQL)
		require.NoError(t, err, step.SQL)
	}
	// Position 4 has the larger xid; a position reader read it before 5 committed.
	four, five := tb.outOfOrder(t, "legacy")
	target := store.NewTarget(tb.pool, 5*time.Second)
	commitTo(t, tb.ctx, target, "p", store.OrderPosition, store.Cursor{Position: four.Position})

	legacy.Ordering = store.OrderXID8
	r := store.NewReader(tb.pool, legacy, 5*time.Second)
	claimed, err := target.Claim(tb.ctx, "p", "node", 0, store.OrderXID8)
	require.NoError(t, err)
	require.Equal(t, store.OrderPosition, claimed.Ordering, "the claim keeps the ordering that wrote the cursor")
	cp, err := target.Convert(tb.ctx, claimed, r)
	require.NoError(t, err)
	require.Equal(t, store.OrderXID8, cp.Ordering)
	require.Equal(t, store.Cursor{}, cp.Cursor)
	require.Equal(t, four.Position, cp.PositionFloor)
	loaded, _, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, cp, loaded)

	// Exactly what position 4 meant: 1-4 done (4 despite its xid), 5 not.
	got, err := r.Read(tb.ctx, cp.Cursor, store.Filter{PositionFloor: cp.PositionFloor}, 10, nil)
	require.NoError(t, err)
	require.Equal(t, []store.Cursor{five}, cursors(got))
	n, _, err := r.Lag(tb.ctx, cp.Cursor, store.Filter{PositionFloor: cp.PositionFloor})
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	require.False(t, (store.Filter{PositionFloor: 4}).Matches(&store.Event{Cursor: store.Cursor{XID: 99, Position: 4}}))
	require.True(t, (store.Filter{PositionFloor: 4}).Matches(&store.Event{Cursor: store.Cursor{XID: 1, Position: 5}}))

	// The floor keeps the read an index range scan on (transaction_id,
	// position), with no sort (seq scans off: this table is tiny).
	var plan []string
	err = pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(tb.ctx, `SET LOCAL enable_seqscan = off`); err != nil {
			return err
		}
		rows, err := tx.Query(tb.ctx, `EXPLAIN (COSTS OFF) SELECT global_position FROM legacy
			WHERE (transaction_id, global_position) > ('0'::xid8, 0::bigint) AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
			AND global_position > $1::bigint ORDER BY transaction_id, global_position LIMIT 10`, int64(4))
		if err != nil {
			return err
		}
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	require.NoError(t, err)
	require.Contains(t, plan[1], "Scan using legacy_transaction_id_global_position_idx", plan)
	require.Contains(t, plan[2], "(global_position > ", plan, "the floor is checked in the index")
	require.NotContains(t, strings.Join(plan, "\n"), "Sort", plan)

	// The move is fenced by the claim: a stale claim converts nothing.
	_, err = target.Claim(tb.ctx, "p", "node", 0, store.OrderXID8)
	require.NoError(t, err)
	_, err = target.Convert(tb.ctx, store.Checkpoint{Projector: "p", Epoch: claimed.Epoch, Ordering: store.OrderPosition, Cursor: claimed.Cursor}, r)
	require.ErrorIs(t, err, store.ErrFenced)
}

func TestConvertXID8CheckpointToPositionOnlyWhenExact(t *testing.T) {
	// Not parallel: the xmin horizon is cluster-wide, so another test's
	// open transaction would hide this test's fresh events.
	tb := setup(t)
	for range 3 {
		tb.insert(t, "s", "A", `{}`)
	}
	xr := store.NewReader(tb.pool, tb.src, 5*time.Second)
	three, ok, err := xr.Head(tb.ctx)
	require.NoError(t, err)
	require.True(t, ok)
	four, five := tb.outOfOrder(t, "events")
	posSrc := tb.src
	posSrc.Ordering = store.OrderPosition
	pr := store.NewReader(tb.pool, posSrc, 5*time.Second)
	target := store.NewTarget(tb.pool, 5*time.Second)

	// Position 5 (the smaller xid) is applied, 4 is not: no position cursor
	// says that, so the switch is refused and the checkpoint left as it was.
	before := commitTo(t, tb.ctx, target, "p", store.OrderXID8, store.Cursor{XID: five.XID, Position: five.Position})
	claimed, err := target.Claim(tb.ctx, "p", "node", 0, store.OrderPosition)
	require.NoError(t, err)
	_, err = target.Convert(tb.ctx, claimed, pr)
	require.ErrorIs(t, err, store.ErrOrderingChanged)
	require.ErrorContains(t, err, "projector p")
	require.ErrorContains(t, err, fmt.Sprintf("position %d is not applied yet while position %d is", four.Position, five.Position))
	require.ErrorContains(t, err, "projectord reset p --yes")
	after, _, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, before.Cursor, after.Cursor)
	require.Equal(t, store.OrderXID8, after.Ordering)

	// Covering 1-3 is exactly "up to 3".
	commitTo(t, tb.ctx, target, "q", store.OrderXID8, three)
	claimed, err = target.Claim(tb.ctx, "q", "node", 0, store.OrderPosition)
	require.NoError(t, err)
	cp, err := target.Convert(tb.ctx, claimed, pr)
	require.NoError(t, err)
	require.Equal(t, store.OrderPosition, cp.Ordering)
	require.Equal(t, store.Cursor{Position: three.Position}, cp.Cursor)

	// Covering everything, including 4 after 5 in xid order, is "up to 5".
	commitTo(t, tb.ctx, target, "r", store.OrderXID8, four)
	claimed, err = target.Claim(tb.ctx, "r", "node", 0, store.OrderPosition)
	require.NoError(t, err)
	cp, err = target.Convert(tb.ctx, claimed, pr)
	require.NoError(t, err)
	require.Equal(t, store.Cursor{Position: five.Position}, cp.Cursor)
	got, err := pr.Read(tb.ctx, cp.Cursor, store.Filter{}, 10, nil)
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestClaimInfersTheOrderingOfLegacyCheckpoints(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	// Rows as a binary without the ordering column left them.
	_, err := tb.pool.Exec(tb.ctx, `INSERT INTO projectord.checkpoints (projector, last_xid, last_position) VALUES
		('was_position', '0', 7), ('was_xid8', '900', 7), ('at_start', '0', 0)`)
	require.NoError(t, err)
	target := store.NewTarget(tb.pool, 5*time.Second)
	for name, want := range map[string]store.Ordering{"was_position": store.OrderPosition, "was_xid8": store.OrderXID8, "at_start": store.OrderXID8} {
		cp, err := target.Claim(tb.ctx, name, "node", 0, store.OrderXID8)
		require.NoError(t, err)
		require.Equal(t, want, cp.Ordering, name)
	}
	cp, err := target.Claim(tb.ctx, "fresh", "node", 0, store.OrderPosition)
	require.NoError(t, err)
	require.Equal(t, store.OrderPosition, cp.Ordering, "a new checkpoint records the reader's ordering")
}

func TestResetFencesTheLeaderBeforeItsResetSQLRuns(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE rm (position bigint NOT NULL)`)
	require.NoError(t, err)
	sink, err := store.CompileSQLSink(map[string]string{"A": `INSERT INTO rm VALUES (@position)`}, "")
	require.NoError(t, err)
	target := store.NewTarget(tb.pool, 30*time.Second)
	cp, err := target.Claim(tb.ctx, "p", "node", 0, store.OrderXID8)
	require.NoError(t, err)

	// The test holds this lock, so the reset pauses right after its DELETE,
	// as a longer reset would.
	const pause = 4242
	gate, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer gate.Rollback(tb.ctx)
	_, err = gate.Exec(tb.ctx, `SELECT pg_advisory_xact_lock($1)`, pause)
	require.NoError(t, err)
	resetDone := make(chan error, 1)
	go func() {
		_, err := target.Reset(context.WithoutCancel(tb.ctx), "p", `DELETE FROM rm; SELECT pg_advisory_xact_lock(4242)`)
		resetDone <- err
	}()
	require.Eventually(t, func() bool { return waitingFor(tb, "pg_advisory_xact_lock(4242)") }, 30*time.Second, 5*time.Millisecond,
		"the reset never reached its pause")

	// A leader batch commits while the reset is between its DELETE and its end.
	ev := store.Event{Cursor: store.Cursor{XID: 5, Position: 1}, StreamID: "s", Type: "A", Data: []byte(`{}`)}
	commitDone := make(chan error, 1)
	go func() {
		commitDone <- target.Commit(context.WithoutCancel(tb.ctx), store.CommitRequest{Projector: "p", Epoch: cp.Epoch, To: ev.Cursor, Events: []store.Event{ev}}, sink)
	}()
	var commitErr error
	committed := false
	require.Eventually(t, func() bool {
		select {
		case commitErr = <-commitDone:
			committed = true
			return true
		default:
			return waitingFor(tb, "projectord.advance")
		}
	}, 30*time.Second, 5*time.Millisecond, "the batch neither committed nor waited for the checkpoint")

	require.NoError(t, gate.Rollback(tb.ctx))
	require.NoError(t, <-resetDone)
	if !committed {
		commitErr = <-commitDone
	}
	var rows int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM rm`).Scan(&rows))
	require.Zero(t, rows, "a batch that committed during the reset kept its rows, and the replay will apply them again")
	require.ErrorIs(t, commitErr, store.ErrFenced, "the batch in flight during the reset is fenced")
	after, _, err := target.Load(tb.ctx, "p")
	require.NoError(t, err)
	require.True(t, after.AtStart())
	require.Empty(t, after.Ordering)
}

// waitingFor reports whether a backend of tb's database waits on a lock
// while running a query containing fragment.
func waitingFor(tb *testBundle, fragment string) bool {
	var n int
	err := tb.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock' AND strpos(query, $1) > 0`, fragment).Scan(&n)
	return err == nil && n > 0
}
