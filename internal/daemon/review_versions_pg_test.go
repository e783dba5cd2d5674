package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// A rebuild that drops a handler: version 1 handles A and B, version 2
// only A. The last events before a quiet spell are B's. Version 2 reads
// them, asks for its promotion before persisting that it passed over them
// (run.go: caughtUp, then passOver), finds version 1's checkpoint ahead
// (ErrBehindLive, "the next short batch tries again"), then persists the
// advance in wait(), which asks for nothing. Its checkpoint now equals
// version 1's, and no batch comes while the source is quiet: version 2 is
// caught up and is not promoted.
func TestCaughtUpVersionIsPromotedAfterPassingOverItsLastEvents(t *testing.T) {
	tb := setupPG(t)
	tb.appendEvents(t, 200, 100, "A")
	tb.appendEvents(t, 50, 50, "B")
	b1, p1 := tb.versionBackend(t, "n1", 1, &config.SQLSink{
		Setup:    `CREATE TABLE acct_v1 (position bigint NOT NULL)`,
		Handlers: map[string]string{"A": `INSERT INTO acct_v1 VALUES (@position)`, "B": `INSERT INTO acct_v1 VALUES (@position)`},
		Promote:  `CREATE OR REPLACE VIEW acct_view AS SELECT position FROM acct_v1`,
	})
	b2, p2 := tb.versionBackend(t, "n2", 2, &config.SQLSink{
		Setup:    `CREATE TABLE acct_v2 (position bigint NOT NULL)`,
		Handlers: map[string]string{"A": `INSERT INTO acct_v2 VALUES (@position)`},
		Promote:  `CREATE OR REPLACE VIEW acct_view AS SELECT position FROM acct_v2`,
	})
	target := store.NewTarget(tb.pool, 5*time.Second)
	ctx1, stop1 := context.WithCancel(tb.ctx)
	defer stop1()
	done1 := start(ctx1, p1, b1)
	last := tb.lastEvent(t)
	testsupport.Until(t, "version 1 caught up", 30*time.Second, func() bool { return tb.peek("acct").Cursor == last })

	ctx2, stop2 := context.WithCancel(tb.ctx)
	defer stop2()
	done2 := start(ctx2, p2, b2)
	testsupport.Until(t, "version 2's checkpoint at the head, equal to version 1's", 30*time.Second, func() bool {
		return tb.peek("acct@v2").Cursor == last
	})
	promoted := func() bool {
		v, _ := target.LiveVersion(context.Background(), "acct")
		return v == 2
	}
	// Caught up, its checkpoint equal to version 1's, with no event to
	// come: promoted all the same.
	testsupport.Until(t, "version 2 promoted with no further event after the ones it passed over", 10*time.Second, promoted)
	// One event version 2 handles: it stays promoted.
	tb.appendEvents(t, 1, 1, "A")
	testsupport.Until(t, "version 2 promoted after an event it handles", 30*time.Second, promoted)
	stop2()
	<-done2
	stop1()
	<-done1
}
