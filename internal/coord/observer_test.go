package coord_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/coord"
	"github.com/projectord/projectord/internal/testsupport"
)

// recorder is an Observer that records what it is told, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
	views  []coord.View
	// firstTurn is the session's turn channel before it started; onView
	// records whether it was still open at the first view.
	firstTurn      <-chan struct{}
	turnBeforeView bool
}

func (r *recorder) View(v coord.View) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.views) == 0 && r.firstTurn != nil {
		select {
		case <-r.firstTurn:
			r.turnBeforeView = true
		default:
		}
	}
	r.views = append(r.views, v)
	return false
}

func (r *recorder) Released(p string) { r.add("released " + p) }
func (r *recorder) Leaving(node string, pid uint32) bool {
	r.add(fmt.Sprintf("leaving %s %d", node, pid))
	return true
}
func (r *recorder) Lost() { r.add("lost") }

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) lastView() (coord.View, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.views) == 0 {
		return coord.View{}, false
	}
	return r.views[len(r.views)-1], true
}

func (r *recorder) eventsNow() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// TestObserverSeesViewsReleasesAndLeaves: a session with an Observer gives
// it the first view before standbys get their first turn; every view names
// the other live nodes and every holder; another replica's stop is
// announced before its releases, each release is announced, and a
// replica's own announcements are not reported to itself.
func TestObserverSeesViewsReleasesAndLeaves(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	ra, rb := &recorder{}, &recorder{}
	a := tb.sessionWith(t, "a", 50*time.Millisecond, 5*time.Second, func(c *coord.Config) { c.Observer = ra })
	b := tb.sessionWith(t, "b", 50*time.Millisecond, 5*time.Second, func(c *coord.Config) { c.Observer = rb })
	ctx := t.Context()
	la, err := a.TryAcquire(ctx, "p1", 1)
	require.NoError(t, err)
	_, err = a.TryAcquire(ctx, "p2", 2)
	require.NoError(t, err)

	testsupport.Until(t, "b's view shows a and its locks", 10*time.Second, func() bool {
		v, ok := rb.lastView()
		return ok && len(v.Members) == 1 && v.Members[0].Node == "a" && int32(a.PID()) == v.Members[0].PID &&
			len(v.Holders) == 2 && v.Holders[0].ID == 1 && v.Holders[0].PID == int32(a.PID()) && v.Holders[1].ID == 2
	})
	v, _ := rb.lastView()
	require.Equal(t, "b", v.Self)
	require.Equal(t, int32(b.PID()), v.SelfPID)

	a.Leave()
	require.NoError(t, la.Release(ctx))
	want := []string{fmt.Sprintf("leaving a %d", a.PID()), "released p1"}
	testsupport.Until(t, "b told of a's stop, then of its release", 10*time.Second, func() bool {
		return slices.Equal(rb.eventsNow(), want)
	})
	require.Empty(t, ra.eventsNow(), "a is not told of its own announcements")
}

// TestFirstViewComesBeforeTheFirstTurn: standbys that wake at the
// session's first turn find a view already there, although the heartbeat
// interval (a minute) has not passed.
func TestFirstViewComesBeforeTheFirstTurn(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	cc, err := pgx.ParseConfig(tb.url)
	require.NoError(t, err)
	r := &recorder{}
	s := coord.New(coord.Config{
		ConnConfig: cc, Namespace: 42, NodeID: "n", Hostname: "host", Version: "test",
		HeartbeatInterval: time.Minute, AcquireInterval: time.Hour, LeaseTimeout: 5 * time.Minute,
		TCPUserTimeout: 5 * time.Second, KeepaliveIdle: time.Second, KeepaliveInterval: time.Second, KeepaliveCount: 3,
		Observer: r, Logger: zaptest.NewLogger(t),
	})
	r.firstTurn = s.Turn()
	require.NoError(t, s.Start(t.Context()))
	t.Cleanup(s.Stop)
	select {
	case <-r.firstTurn:
	case <-time.After(10 * time.Second):
		t.Fatal("no first turn")
	}
	_, ok := r.lastView()
	require.True(t, ok, "a view was taken by the first turn")
	r.mu.Lock()
	defer r.mu.Unlock()
	require.False(t, r.turnBeforeView, "the first turn came before the first view")
	require.Len(t, r.views, 1)
}
