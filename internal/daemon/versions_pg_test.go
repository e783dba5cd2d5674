package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// versionBackend is a bare backend (no daemon, so no NOTIFY of a promotion
// reaches it) running version v of projector acct.
func (tb *pgBundle) versionBackend(t *testing.T, node string, v int, sink *config.SQLSink) (*runner.PGBackend, runner.Projector) {
	t.Helper()
	cfg := Keyed(tb.config(t, config.Projector{Name: "acct", Version: v, Sink: config.Sink{SQL: sink}}))
	b := tb.backend(t, cfg, node)
	b.AddVersion(cfg.Projectors[0].Name, VersionOf(cfg.Projectors[0]))
	return b, ProjectorOf(cfg.Projectors[0], cfg, tb.log.Named(node), nil)
}

// A leader of version 1 that learns of nothing (no NOTIFY) while version 2
// is promoted and retires version 1's table: its next batch fails on the
// dropped table, which is not retried as a database fault but recognised
// as the fence it is; its supervisor then reports superseded and never
// takes version 1's lock again.
func TestPGSupersededVersionStepsDownAndNeverLeadsAgain(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 300, 100, "A")
	b1, p1 := tb.versionBackend(t, "n1", 1, &config.SQLSink{
		Setup:    `CREATE TABLE acct_v1 (position bigint NOT NULL)`,
		Handlers: map[string]string{"A": `INSERT INTO acct_v1 VALUES (@position)`},
		Promote:  `CREATE OR REPLACE VIEW acct_view AS SELECT position FROM acct_v1`,
	})
	b2, p2 := tb.versionBackend(t, "n2", 2, &config.SQLSink{
		Setup:    `CREATE TABLE acct_v2 (position bigint NOT NULL)`,
		Handlers: map[string]string{"A": `INSERT INTO acct_v2 VALUES (@position)`},
		Promote:  `CREATE OR REPLACE VIEW acct_view AS SELECT position FROM acct_v2`,
		Retire:   `DROP TABLE acct_v1`,
	})
	require.Equal(t, "acct@v2", p2.Name)
	target := store.NewTarget(tb.pool, 5*time.Second)
	record := func(v int) store.VersionRecord {
		recs, err := target.Versions(context.Background())
		if err != nil || len(recs) < v {
			return store.VersionRecord{}
		}
		return recs[v-1]
	}

	ctx1, stop1 := context.WithCancel(tb.ctx)
	defer stop1()
	done1 := start(ctx1, p1, b1)
	testsupport.Until(t, "version 1 live and promoted", 30*time.Second, func() bool {
		r := record(1)
		return r.IsLive() && r.PromotedAt != nil && tb.peek("acct").EventsApplied == 300
	})

	ctx2, stop2 := context.WithCancel(tb.ctx)
	defer stop2()
	done2 := start(ctx2, p2, b2)
	testsupport.Until(t, "version 2 promoted and version 1 retired", 30*time.Second, func() bool {
		return record(2).IsLive() && record(1).RetiredAt != nil
	})
	v1 := tb.checkpoint(t, "acct")

	tb.appendEvents(t, 50, 50, "A")
	select {
	case err := <-done1:
		require.ErrorIs(t, err, runner.ErrDeposed, "a commit refused as superseded steps down")
	case <-time.After(30 * time.Second):
		t.Fatal("version 1's leader kept retrying a batch its replacement made impossible")
	}
	require.Equal(t, v1.Cursor, tb.checkpoint(t, "acct").Cursor, "version 1 committed nothing after its promotion")

	s := runner.NewSupervisor(p1, b1)
	sctx, stopS := context.WithCancel(tb.ctx)
	sdone := make(chan error, 1)
	go func() { sdone <- s.Run(sctx) }()
	testsupport.Until(t, "the supervisor of version 1 superseded", 30*time.Second, func() bool { return s.State() == runner.StateSuperseded })
	// The old leader's lock goes with its lease, released by the
	// coordination session after its Run returned: polled, not sampled. A
	// superseded supervisor that took it would hold it to the end.
	testsupport.Until(t, "nobody holds version 1's lock", 30*time.Second, func() bool {
		var held bool
		require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT EXISTS (SELECT FROM pg_locks l JOIN projectord.projectors p ON p.id = l.objid::int
			WHERE p.name = 'acct' AND l.locktype = 'advisory' AND l.granted)`).Scan(&held))
		return !held
	})
	require.Equal(t, v1.Epoch, tb.checkpoint(t, "acct").Epoch, "nobody claimed version 1 again")
	stopS()
	require.NoError(t, <-sdone)

	want := tb.lastEvent(t)
	testsupport.Until(t, "version 2 caught up", 30*time.Second, func() bool { return tb.peek("acct@v2").Cursor == want })
	var n, distinct int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT count(*), count(DISTINCT position) FROM acct_view`).Scan(&n, &distinct))
	require.Equal(t, 350, n, "version 2 applied every event once")
	require.Equal(t, 350, distinct)
	for v := 1; v <= 2; v++ {
		require.NotNil(t, record(v).SetupAt, "version %d was set up", v)
	}
	stop2()
	require.NoError(t, <-done2)
	stop1()
}
