package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// UncheckedSQLSink builds a sink whose handlers skip compileHandler's
// refusals, to show what PostgreSQL does with a handler that slipped past
// them. Handlers take no parameters.
func UncheckedSQLSink(handlers map[string]string) *SQLSink {
	s := &SQLSink{handlers: map[string]*statement{}}
	for t, sql := range handlers {
		s.handlers[t] = &statement{key: t, sql: sql}
	}
	return s
}

// ReadSQL is the reader's batch statement for src, as resolved and
// inspected on pool, and f.
func ReadSQL(ctx context.Context, pool *pgxpool.Pool, src Source, f Filter) (string, error) {
	l, err := src.Inspect(ctx, pool)
	if err != nil {
		return "", err
	}
	return src.readSQL(f, newReadPlan(src, l)), nil
}

// CursorIndexName is the name source prepare gives src's cursor index.
func CursorIndexName(src Source) string { return indexNameFor(src) }

// HeadSQL, NewestSQL and LagSQL are the reader's statements for src.
func HeadSQL(src Source) string          { return src.headSQL() }
func NewestSQL(src Source) string        { return src.newestSQL() }
func LagSQL(src Source, f Filter) string { return src.lagSQL(f) }

// HoldGroups enables group commit on t with its committer held: it takes
// no group until release is called, so that a test can queue a known set
// of batches first; queued waits until n batches are queued. Call it
// before the first Commit.
func HoldGroups(t *Target) (queued func(tb testing.TB, n int), release func()) {
	queued = WatchGroups(t)
	hold := make(chan struct{})
	t.groups.hold = hold
	var once sync.Once
	return queued, func() { once.Do(func() { close(hold) }) }
}

// WatchGroups enables group commit on t; queued waits until n batches are
// queued. Call it before the first Commit.
func WatchGroups(t *Target) (queued func(tb testing.TB, n int)) {
	t.EnableGroupCommit()
	t.groups.queued.Init()
	return func(tb testing.TB, n int) {
		tb.Helper()
		t.groups.queued.WaitFor(tb, time.Minute, fmt.Sprintf("%d queued batches", n), func(l int) bool { return l == n })
	}
}

// LearnOutcome is what a group cut short asks the server about its
// transaction xid, run by the backend pid.
func LearnOutcome(ctx context.Context, t *Target, xid uint64, pid uint32) (bool, error) {
	return t.learnOutcome(ctx, xid, pid)
}

// GroupParts is how many parts t would commit a group of n batches in now.
func GroupParts(t *Target, n int) int { return t.groupParts(n) }
