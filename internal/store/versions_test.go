package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// versionSetup gives two versions of projector p, each claimed, version 1
// live and promoted.
func versionSetup(t *testing.T, tb *testBundle, target *store.Target) (v1, v2 store.Version, e1, e2 int64) {
	t.Helper()
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE retired (version int NOT NULL)`)
	require.NoError(t, err)
	v1 = store.Version{Name: "p", Version: 1, Setup: `CREATE TABLE p_v1 (n int)`, Promote: `CREATE OR REPLACE VIEW p_view AS SELECT n FROM p_v1`}
	v2 = store.Version{Name: "p", Version: 2, Setup: `CREATE TABLE p_v2 (n int)`, Promote: `CREATE OR REPLACE VIEW p_view AS SELECT n FROM p_v2`,
		Retire: `INSERT INTO retired VALUES (1)`}
	claim := func(v store.Version) int64 {
		rec, err := target.EnsureVersion(tb.ctx, v)
		require.NoError(t, err)
		require.Equal(t, v.Key(), rec.Checkpoint)
		cp, err := target.Claim(tb.ctx, v.Key(), "n", 0, store.OrderXID8)
		require.NoError(t, err)
		ran, err := target.Setup(tb.ctx, v, cp.Epoch)
		require.NoError(t, err)
		require.True(t, ran)
		return cp.Epoch
	}
	e1 = claim(v1)
	promoted, err := target.Promote(tb.ctx, v1, e1)
	require.NoError(t, err)
	require.True(t, promoted, "a first-ever version is live from the start, and its promote runs once it is caught up")
	e2 = claim(v2)
	live, err := target.LiveVersion(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 1, live, "a newer version builds beside the live one")
	return v1, v2, e1, e2
}

func TestVersionPromotionFencesTheOlderVersion(t *testing.T) {
	tb := setup(t)
	tb.insert(t, "s", "A", `{}`)
	target := store.NewTarget(tb.pool, 5*time.Second)
	v1, v2, e1, e2 := versionSetup(t, tb, target)
	head, _, err := store.NewReader(tb.pool, tb.src, time.Second).Head(tb.ctx)
	require.NoError(t, err)

	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: v2.Key(), Epoch: e2, To: head}, nil))
	// A reader inside a long transaction holds the view: the promotion's
	// wait for it is bounded, and a failed promotion records nothing.
	reader, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	_, err = reader.Exec(tb.ctx, `SELECT * FROM p_view`)
	require.NoError(t, err)
	_, err = target.Promote(tb.ctx, v2, e2)
	require.ErrorContains(t, err, "55P03", "lock_timeout")
	live, err := target.LiveVersion(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 1, live)
	require.NoError(t, reader.Commit(tb.ctx))
	promoted, err := target.Promote(tb.ctx, v2, e2)
	require.NoError(t, err)
	require.True(t, promoted)
	again, err := target.Promote(tb.ctx, v2, e2)
	require.NoError(t, err)
	require.False(t, again, "a version is promoted once")

	// Version 1's leader still holds its epoch: its commit is refused.
	err = target.Commit(tb.ctx, store.CommitRequest{Projector: v1.Key(), Epoch: e1, To: head}, nil)
	require.ErrorIs(t, err, store.ErrSuperseded)
	require.ErrorIs(t, err, store.ErrFenced, "a loop that knows nothing of versions steps down")
	c, _, err := target.Load(tb.ctx, v1.Key())
	require.NoError(t, err)
	require.True(t, c.Cursor.IsZero(), "nothing of version 1 landed")
	_, err = target.Promote(tb.ctx, v1, e1)
	require.ErrorIs(t, err, store.ErrSuperseded)

	var view string
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT pg_get_viewdef('p_view')`).Scan(&view))
	require.Contains(t, view, "p_v2")

	// A promotion is fenced by the new version's epoch.
	v3 := store.Version{Name: "p", Version: 3}
	_, err = target.EnsureVersion(tb.ctx, v3)
	require.NoError(t, err)
	cp3, err := target.Claim(tb.ctx, v3.Key(), "n", 0, store.OrderXID8)
	require.NoError(t, err)
	_, err = target.Claim(tb.ctx, v3.Key(), "m", 0, store.OrderXID8)
	require.NoError(t, err)
	_, err = target.Promote(tb.ctx, v3, cp3.Epoch)
	require.ErrorIs(t, err, store.ErrFenced)
	live, err = target.LiveVersion(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 2, live)
}

func TestVersionSetupAndRetireRunOnce(t *testing.T) {
	tb := setup(t)
	target := store.NewTarget(tb.pool, 5*time.Second)
	v1, v2, _, e2 := versionSetup(t, tb, target)

	// A second claim of either version: setup has run, it does not again
	// (CREATE TABLE without IF NOT EXISTS would fail).
	for _, v := range []store.Version{v1, v2} {
		cp, err := target.Claim(tb.ctx, v.Key(), "m", 0, store.OrderXID8)
		require.NoError(t, err)
		ran, err := target.Setup(tb.ctx, v, cp.Epoch)
		require.NoError(t, err)
		require.False(t, ran)
		if v == v2 {
			e2 = cp.Epoch
		}
	}
	retired, err := target.Retire(tb.ctx, v2, e2)
	require.NoError(t, err)
	require.Empty(t, retired, "nothing retires before its replacement is live")

	// Version 1 committed past version 2's checkpoint: switching now would
	// take readers back in time, so the promotion waits for version 2.
	e1 := tb.claimEpoch(t, target, v1.Key())
	ahead := store.Cursor{XID: 7, Position: 7}
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: v1.Key(), Epoch: e1, To: ahead}, nil))
	_, err = target.Promote(tb.ctx, v2, e2)
	require.ErrorIs(t, err, store.ErrBehindLive)
	live, err := target.LiveVersion(tb.ctx, "p")
	require.NoError(t, err)
	require.Equal(t, 1, live)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: v2.Key(), Epoch: e2, To: ahead}, nil))
	_, err = target.Promote(tb.ctx, v2, e2)
	require.NoError(t, err)
	// A retire that fails records nothing, and runs again later.
	failing := v2
	failing.Retire = `INSERT INTO retired VALUES (1/0)`
	_, err = target.Retire(tb.ctx, failing, e2)
	require.Error(t, err)
	retired, err = target.Retire(tb.ctx, v2, e2)
	require.NoError(t, err)
	require.Equal(t, []int{1}, retired)
	// Any number of later calls, by any leader of version 2, after a
	// crash or not: the record committed with the retire SQL.
	cp, err := target.Claim(tb.ctx, v2.Key(), "o", 0, store.OrderXID8)
	require.NoError(t, err)
	for range 3 {
		retired, err = target.Retire(tb.ctx, v2, cp.Epoch)
		require.NoError(t, err)
		require.Empty(t, retired)
	}
	var runs int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM retired`).Scan(&runs))
	require.Equal(t, 1, runs)
	recs, err := target.Versions(tb.ctx)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	require.Equal(t, "retired", recs[0].State())
	require.Equal(t, "live", recs[1].State())
}

// A version-1 batch whose commit races the promotion lands before it or is
// refused; never after. The batch holds its share of the live row, the
// promotion waits; or the promotion holds it, and the batch fails.
func TestVersionCommitRacingPromotionLandsBeforeOrIsRefused(t *testing.T) {
	tb := setup(t)
	target := store.NewTarget(tb.pool, 5*time.Second)
	v1, v2, e1, e2 := versionSetup(t, tb, target)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE commits (version int NOT NULL, seen bigint)`)
	require.NoError(t, err)

	// Version 2 is ahead of every cursor version 1 reaches below.
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: v2.Key(), Epoch: e2, To: store.Cursor{Position: 5}}, nil))

	// Deterministic halves first. (a) The v1 batch is in flight (its
	// advance ran, not yet committed): the promotion waits, and v1 lands first.
	tx, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	_, err = tx.Exec(tb.ctx, `INSERT INTO commits (version) VALUES (1)`)
	require.NoError(t, err)
	_, err = tx.Exec(tb.ctx, `SELECT projectord.advance($1, $2, '0', 0, '0', 1, 1)`, v1.Key(), e1)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { _, err := target.Promote(context.Background(), v2, e2); done <- err }()
	// The promotion waits for the batch's share of the live row.
	waitForPromotionLockWait(t, tb)
	select {
	case err := <-done:
		t.Fatalf("promotion committed while a version-1 batch held the live row: %v", err)
	default:
	}
	require.NoError(t, tx.Commit(tb.ctx))
	require.NoError(t, <-done)

	// (b) After the promotion, the next v1 batch is refused.
	err = pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(tb.ctx, `INSERT INTO commits (version) VALUES (1)`); err != nil {
			return err
		}
		_, err := tx.Exec(tb.ctx, `SELECT projectord.advance($1, $2, '0', 1, '0', 2, 1)`, v1.Key(), e1)
		return err
	})
	require.ErrorContains(t, err, "superseded")

	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM commits`).Scan(&n))
	require.Equal(t, 1, n)

	// Adversarial: version-2 commits, one after another, racing the
	// promotion of version 3. The promote SQL runs before the promotion
	// locks the live row (so that waiting for a view stalls no commit), so
	// the count is taken at the promotion's commit, by a deferred trigger:
	// by then it holds the live row, so it sees every version-2 commit that
	// got in before it (they held their share of the row; it waited for
	// them), and no version-2 commit may land after that.
	_, err = tb.pool.Exec(tb.ctx, `CREATE FUNCTION count_v2() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			UPDATE commits SET seen = (SELECT count(*) FROM commits WHERE version = 2) WHERE version = 3;
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER count_v2 AFTER INSERT ON commits DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (NEW.version = 3) EXECUTE FUNCTION count_v2()`)
	require.NoError(t, err)
	v3 := store.Version{Name: "p", Version: 3, Promote: `INSERT INTO commits (version) VALUES (3)`}
	_, err = target.EnsureVersion(tb.ctx, v3)
	require.NoError(t, err)
	cp3, err := target.Claim(tb.ctx, v3.Key(), "n", 0, store.OrderXID8)
	require.NoError(t, err)
	// Version 3 is past every cursor version 2 reaches below: it may switch.
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: v3.Key(), Epoch: cp3.Epoch, To: store.Cursor{XID: 1 << 40, Position: 1 << 40}}, nil))
	c2, _, err := target.Load(tb.ctx, v2.Key())
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	cur := c2.Cursor
	landed, refused := 0, 0
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				if refused > 0 {
					mu.Unlock()
					return
				}
				from := cur
				to := store.Cursor{XID: from.XID, Position: from.Position + 1}
				err := pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(tb.ctx, `INSERT INTO commits (version) VALUES (2)`); err != nil {
						return err
					}
					_, err := tx.Exec(tb.ctx, `SELECT projectord.advance($1, $2, $3, $4, $5, $6, 1)`,
						v2.Key(), e2, from.XID, from.Position, to.XID, to.Position)
					return err
				})
				if err == nil {
					cur = to
					landed++
				} else {
					refused++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	// The promotion starts while they commit, one after another.
	testsupport.Until(t, "version-2 commits landing", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return landed >= 20
	})
	_, err = target.Promote(tb.ctx, v3, cp3.Epoch)
	require.NoError(t, err)
	close(stop)
	wg.Wait()
	var seen, rows2 int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT seen FROM commits WHERE version = 3`).Scan(&seen))
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM commits WHERE version = 2`).Scan(&rows2))
	require.Equal(t, landed, rows2, "every landed commit left its row, every refused one none")
	require.Equal(t, seen, rows2, "a version-2 commit landed after the promotion")
	require.Equal(t, 1, refused)
	err = pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(tb.ctx, `SELECT projectord.advance($1, $2, $3, $4, $5, $6, 1)`,
			v2.Key(), e2, cur.XID, cur.Position, cur.XID, cur.Position+1)
		return err
	})
	require.ErrorContains(t, err, "superseded")
	t.Logf("version-2 commits racing the promotion of version 3: %d landed before it, %d refused", landed, refused)
}

func (tb *testBundle) claimEpoch(t *testing.T, target *store.Target, key string) int64 {
	t.Helper()
	cp, err := target.Claim(tb.ctx, key, "n", 0, store.OrderXID8)
	require.NoError(t, err)
	return cp.Epoch
}

// waitForPromotionLockWait waits until a promotion waits for a lock on a
// live row (its FOR UPDATE).
func waitForPromotionLockWait(t *testing.T, tb *testBundle) {
	t.Helper()
	testsupport.Until(t, "the promotion waiting for a lock", 30*time.Second, func() bool {
		var waiting bool
		_ = tb.pool.QueryRow(tb.ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%live_versions%FOR UPDATE%')`).Scan(&waiting)
		return waiting
	})
}
