package daemon

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
)

// TestPGLockWaitOnReadModelIsNotChargedToEvents: another session holds
// a lock on the read model (a migration, an operator's transaction) for
// longer than query_timeout. Every batch times out waiting for it; that is
// the database's fault, not the events', so nothing may be skipped: once the
// lock goes, every event is applied exactly once.
func TestPGLockWaitOnReadModelIsNotChargedToEvents(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 4, 4, "A")
	// Takes no xid, so it does not hold the xmin horizon back.
	lock, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer lock.Rollback(tb.ctx)
	_, err = lock.Exec(tb.ctx, `LOCK TABLE applied IN SHARE MODE`) // blocks INSERTs
	require.NoError(t, err)

	cfg := tb.config(t, config.Projector{Name: "lk",
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: "skip"}})
	cfg.Database.QueryTimeout = 500 * time.Millisecond
	d := tb.startDaemon(t, cfg, "node-a")
	waitState(t, d, "lk", runner.StateLeader)
	// Several times what the split down to one event and its attempts take.
	require.Never(t, func() bool { return tb.peek("lk").Cursor.Position > 0 }, 8*time.Second, 20*time.Millisecond,
		"the checkpoint moved while the read model was locked: events were skipped for a lock wait")
	require.NoError(t, lock.Rollback(tb.ctx))
	tb.waitCaughtUp(t, "lk")
	require.Equal(t, 4, tb.checkExactlyOnce(t, "lk"))
}

// TestPGRowLockOnReadModelIsNotChargedToEvents: the same with a row lock
// (an operator's transaction holding a read-model row the handler updates),
// which no statement-level check sees coming: the wait ends as a lock
// timeout inside the batch's deadline, retried as the database's fault.
func TestPGRowLockOnReadModelIsNotChargedToEvents(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	_, err := tb.pool.Exec(tb.ctx, `CREATE TABLE counter (id int PRIMARY KEY, n int NOT NULL); INSERT INTO counter VALUES (1, 0)`)
	require.NoError(t, err)
	tb.appendEvents(t, 4, 4, "A")
	lock, err := tb.pool.Begin(tb.ctx)
	require.NoError(t, err)
	defer lock.Rollback(tb.ctx)
	_, err = lock.Exec(tb.ctx, `SELECT * FROM counter WHERE id = 1 FOR UPDATE`)
	require.NoError(t, err)

	cfg := tb.config(t, config.Projector{Name: "rl",
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 10 * time.Millisecond, Then: "skip"},
		Sink: config.Sink{SQL: &config.SQLSink{Handlers: map[string]string{"*": `WITH u AS (UPDATE counter SET n = n + 1 WHERE id = 1)
			INSERT INTO applied (projector, position) VALUES ('rl', @position)`}}}})
	cfg.Database.QueryTimeout = 500 * time.Millisecond
	d := tb.startDaemon(t, cfg, "node-a")
	waitState(t, d, "rl", runner.StateLeader)
	require.Never(t, func() bool { return tb.peek("rl").Cursor.Position > 0 }, 8*time.Second, 20*time.Millisecond,
		"the checkpoint moved while a read-model row was locked: events were skipped for a lock wait")
	require.Contains(t, tb.peek("rl").LastError, "retrying:", "the wait is visible while it lasts")
	require.NoError(t, lock.Rollback(tb.ctx))
	tb.waitCaughtUp(t, "rl")
	require.Equal(t, 4, tb.checkExactlyOnce(t, "rl"))
	var n int
	require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT n FROM counter`).Scan(&n))
	require.Equal(t, 4, n)
}
