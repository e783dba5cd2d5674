package daemon

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/store"
)

// maxPosition is the newest committed event's position.
func (tb *pgBundle) maxPosition(t *testing.T) int64 {
	t.Helper()
	var p int64
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT coalesce(max(global_position), 0) FROM events`).Scan(&p))
	return p
}

// waitPositionCaughtUp waits for a projector in position ordering to reach
// the newest event.
func (tb *pgBundle) waitPositionCaughtUp(t *testing.T, projector string) {
	t.Helper()
	want := store.Cursor{Position: tb.maxPosition(t)}
	require.Eventually(t, func() bool { return tb.peek(projector).Cursor == want }, 30*time.Second, 5*time.Millisecond,
		"projector %s never reached %s", projector, want)
}

func stopDaemon(d *Daemon) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.Stop(ctx)
}

// ordering reads what the checkpoint records about its ordering.
func (tb *pgBundle) ordering(t *testing.T, projector string) (ordering string, floor int64) {
	t.Helper()
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT coalesce(ordering, ''), position_floor FROM projectord.checkpoints WHERE projector = $1`,
		projector).Scan(&ordering, &floor))
	return ordering, floor
}

// writeConcurrently appends n events from several writers whose
// transactions stay open for a while after inserting, so they commit out of
// position order; it returns when all have committed.
func (tb *pgBundle) writeConcurrently(t *testing.T, writers, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := 0; i < n/writers; i += 5 {
				err := pgx.BeginFunc(tb.ctx, tb.pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
						SELECT $1 || '-' || g, 1, 'A', '{}' FROM generate_series(1, 5) g`, fmt.Sprintf("cw%d-%d", w, i)); err != nil {
						return err
					}
					time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond) // a slow writer, not synchronisation
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestPGSwitchFromXID8ToPositionResumesWithoutReplay(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 200, 50, "A")
	cfg := tb.config(t, config.Projector{Name: "sw", BatchSize: 40})
	a := tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "sw")
	stopDaemon(a)
	tb.appendEvents(t, 50, 10, "A") // after the last xid8 batch: the position run applies them

	pcfg := *cfg
	pcfg.Source.Ordering = "position"
	tb.startDaemon(t, &pcfg, "node-b")
	tb.waitPositionCaughtUp(t, "sw")
	tb.appendEvents(t, 30, 10, "A")
	tb.waitPositionCaughtUp(t, "sw")
	require.Equal(t, 280, tb.checkExactlyOnce(t, "sw"))
	require.Equal(t, int64(280), tb.checkpoint(t, "sw").EventsApplied)
	ord, floor := tb.ordering(t, "sw")
	require.Equal(t, "position", ord)
	require.Zero(t, floor)
}

func TestPGSwitchFromXID8ToPositionRefusesWhenNotExact(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 3, 3, "A")
	// Two events whose xid order and position order disagree.
	early, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer early.Rollback(tb.ctx)
	_, err = early.Exec(tb.ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	tb.appendEvents(t, 1, 1, "A") // position 4, the larger xid
	var smaller store.Cursor
	require.NoError(t, early.QueryRow(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ('early', 1, 'A', '{}') RETURNING transaction_id, global_position`).Scan(&smaller.XID, &smaller.Position))
	require.NoError(t, early.Commit(tb.ctx))
	// An xid8 leader has applied 1-3 and 5 (it sorts before 4), not 4.
	target := store.NewTarget(tb.pool, 5*time.Second)
	cp, err := target.Claim(tb.ctx, "sw", "node-x", 0, store.OrderXID8)
	require.NoError(t, err)
	require.NoError(t, target.Commit(tb.ctx, store.CommitRequest{Projector: "sw", Epoch: cp.Epoch, To: smaller}, nil))

	cfg := tb.config(t, config.Projector{Name: "sw"})
	cfg.Source.Ordering = "position"
	d := tb.startDaemon(t, cfg, "node-a")
	select {
	case <-d.Done():
		err := d.Cause()
		require.ErrorIs(t, err, store.ErrOrderingChanged)
		require.ErrorContains(t, err, "projector sw")
		require.ErrorContains(t, err, "projectord reset sw --yes")
		sctx, cancel := context.WithTimeout(tb.ctx, 10*time.Second)
		defer cancel()
		d.Stop(sctx)
		require.ErrorIs(t, d.Cause(), store.ErrOrderingChanged, "the failure stays the cause after Stop")
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon never refused the checkpoint")
	}
	stopDaemon(d) // its supervisor would claim (and refuse) again
	c := tb.checkpoint(t, "sw")
	require.Equal(t, smaller, c.Cursor, "the checkpoint is left as it was")
	require.Equal(t, store.OrderXID8, c.Ordering)
	require.Equal(t, store.StatusHalted, c.Status)
	require.Contains(t, c.LastError, "cannot be converted exactly")
	var applied int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*) FROM applied`).Scan(&applied))
	require.Zero(t, applied)

	// Back to xid8, as the message says: the leader runs, and the refusal
	// no longer shows as the projector's last error.
	xcfg := tb.config(t, config.Projector{Name: "sw"})
	tb.startDaemon(t, xcfg, "node-b")
	tb.waitCaughtUp(t, "sw")
	c = tb.checkpoint(t, "sw")
	require.Equal(t, store.StatusRunning, c.Status)
	require.Empty(t, c.LastError)
}

func TestPGSwitchFromPositionToXID8AfterSourcePrepare(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	// A table as it was before `source prepare`: no xid8 column.
	_, err := tb.pool.Exec(tb.ctx, `ALTER TABLE events DROP COLUMN transaction_id`)
	require.NoError(t, err)
	tb.appendEvents(t, 300, 100, "A")
	cfg := tb.config(t, config.Projector{Name: "mig", BatchSize: 50})
	cfg.Source.Ordering = "position"
	a := tb.startDaemon(t, cfg, "node-a")
	tb.waitPositionCaughtUp(t, "mig")

	// `source prepare` under the running position daemon: the existing rows
	// get xid 1, new ones their writer's xid.
	for _, step := range store.PrepareSQL(store.Source{Table: "public.events", Columns: store.NativeColumns}, false, "") {
		_, err := tb.pool.Exec(tb.ctx, step.SQL)
		require.NoError(t, err, step.SQL)
	}
	tb.appendEvents(t, 100, 20, "A") // applied in position order...
	tb.waitPositionCaughtUp(t, "mig")
	stopDaemon(a)
	tb.appendEvents(t, 50, 10, "A") // ...these by nobody yet

	xcfg := *cfg
	xcfg.Source.Ordering = "xid8"
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.writeConcurrently(t, 4, 400)
	}()
	tb.startDaemon(t, &xcfg, "node-b")
	tb.startDaemon(t, &xcfg, "node-c")
	<-done
	tb.waitCaughtUp(t, "mig")
	require.Equal(t, 850, tb.checkExactlyOnce(t, "mig"))
	ord, floor := tb.ordering(t, "mig")
	require.Equal(t, "xid8", ord)
	require.Equal(t, int64(400), floor, "the position checkpoint became the floor")
}

func TestPGResetWhileTheLeaderCommitsStaysExact(t *testing.T) {
	t.Parallel()
	for _, resetSQL := range []string{
		`DELETE FROM applied WHERE projector = 'rs'`,
		`TRUNCATE applied`,
	} {
		t.Run(resetSQL[:strings.IndexByte(resetSQL, ' ')], func(t *testing.T) {
			t.Parallel()
			tb := setupPG(t)
			tb.appendEvents(t, 500, 100, "A")
			cfg := tb.config(t, config.Projector{Name: "rs", BatchSize: 10, Sink: config.Sink{SQL: &config.SQLSink{
				Handlers: recordHandler("rs"), Reset: resetSQL,
			}}})
			tb.startDaemon(t, cfg, "node-a")
			tb.startDaemon(t, cfg, "node-b")

			// A writer keeps the leader committing small batches throughout.
			// (Stopped between inserts, never mid-insert: a cancelled insert
			// may still commit after the test has read the last event.)
			stop := make(chan struct{})
			writerDone := make(chan error, 1)
			go func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						writerDone <- nil
						return
					default:
					}
					_, err := tb.pool.Exec(tb.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
						SELECT $1 || g, 1, 'A', '{}' FROM generate_series(1, 3) g`, fmt.Sprintf("rw-%d-", i))
					if err != nil {
						writerDone <- err
						return
					}
				}
			}()
			require.Eventually(t, func() bool { return tb.peek("rs").EventsApplied >= 50 }, 30*time.Second, 2*time.Millisecond)
			target := store.NewTarget(tb.pool, 30*time.Second)
			for range 25 {
				epoch, err := target.Reset(tb.ctx, "rs", resetSQL)
				require.NoError(t, err)
				// Reset again only once a new leader is replaying: each reset
				// meets a leader committing.
				require.Eventually(t, func() bool {
					c := tb.peek("rs")
					return c.Epoch > epoch && c.EventsApplied >= 50
				}, 30*time.Second, 2*time.Millisecond, "no leader replayed after the reset")
			}
			close(stop)
			require.NoError(t, <-writerDone)
			tb.waitCaughtUp(t, "rs")
			n := tb.checkExactlyOnce(t, "rs")
			require.Equal(t, int64(n), tb.checkpoint(t, "rs").EventsApplied)
		})
	}
}
