package runner_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/balance"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/runner/memtest"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// yieldingNode hands out leases that the test asks to hand over, and
// holds the first commit until the test lets it go.
type yieldingNode struct {
	*memtest.Node
	yield          chan struct{}
	commitStarted  chan struct{}
	release        chan struct{}
	startedOnce    sync.Once
	commitsAfterGo atomic.Int32
	// readCtx is the context the loop reads on: it ends when the loop is
	// to stop.
	readCtx atomic.Pointer[context.Context]
}

func (n *yieldingNode) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	n.readCtx.CompareAndSwap(nil, &ctx)
	return n.Node.Read(ctx, after, f, limit, buf)
}

type yieldLease struct {
	runner.Lease
	yield chan struct{}
}

func (l yieldLease) Yielded() <-chan struct{} { return l.yield }

func (n *yieldingNode) TryAcquire(ctx context.Context, p string) (runner.Lease, error) {
	l, err := n.Node.TryAcquire(ctx, p)
	if err != nil {
		return nil, err
	}
	return yieldLease{Lease: l, yield: n.yield}, nil
}

func (n *yieldingNode) Commit(ctx context.Context, req store.CommitRequest) error {
	first := false
	n.startedOnce.Do(func() { first = true; close(n.commitStarted) })
	if first {
		<-n.release
	} else {
		n.commitsAfterGo.Add(1)
	}
	return n.Node.Commit(ctx, req)
}

// TestYieldHandsOverAtABatchBoundary: a leader asked to hand over while a
// batch commits finishes that batch, reads and commits no other (the batch
// read ahead is dropped, its budget token returned), releases the lease
// and returns nil, as on a graceful stop; the next leader claims a new
// epoch and goes on from the checkpoint, so every event is applied once.
func TestYieldHandsOverAtABatchBoundary(t *testing.T) {
	t.Parallel()
	tb := setupMem(t)
	for i := 0; i < 20; i++ {
		tb.mem.AppendCommitted(fmt.Sprintf("s-%d", i), "A", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}", "{}")
	}
	budget := runner.NewBudget(4 * tb.p.BatchSize)
	tb.p.Budget = budget
	a := &yieldingNode{Node: tb.mem.Node("a"), yield: make(chan struct{}), commitStarted: make(chan struct{}), release: make(chan struct{})}
	done := start(t.Context(), tb.p, a)
	<-a.commitStarted
	epochA := waitCheckpoint(t, tb.mem, "p", func(store.Checkpoint) bool { return true }).Epoch
	close(a.yield)
	// The request reaches the loop asynchronously; once it has, the batch
	// in flight is the last.
	select {
	case <-(*a.readCtx.Load()).Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the hand-over did not reach the loop")
	}
	close(a.release)
	select {
	case err := <-done:
		require.NoError(t, err, "a hand-over is a graceful stop")
	case <-time.After(10 * time.Second):
		t.Fatal("the leader did not hand over")
	}
	c, _ := tb.mem.Checkpoint("p")
	require.Equal(t, int64(50), c.EventsApplied, "the batch in flight committed, and no other")
	require.Zero(t, a.commitsAfterGo.Load(), "nothing committed after the batch in flight")
	require.Equal(t, "", tb.mem.Leader("p"), "the lease was released")
	require.Equal(t, 4*tb.p.BatchSize, budget.Free(), "the whole budget came back")

	ctx, stop := context.WithCancel(context.Background())
	done = start(ctx, tb.p, tb.mem.Node("b"))
	c = waitCheckpoint(t, tb.mem, "p", func(c store.Checkpoint) bool { return c.Cursor == headOf(tb.mem) })
	stop()
	require.NoError(t, <-done)
	require.Greater(t, c.Epoch, epochA, "the next leader claims a new epoch")
	require.Equal(t, 200, tb.sink.count())
	require.Empty(t, tb.sink.duplicates())
	require.Equal(t, "b", c.LeaderNode)
}

// cluster is replicas in memory, each with a Balance and a supervisor per
// projector, heartbeated by the test: every tick each live node observes
// the memory backend's view (who is live is the test's to say), and gets
// an acquire turn.
type cluster struct {
	t       *testing.T
	mem     *memtest.Memory
	names   []string
	sinks   map[string]*recordingSink
	nodes   map[string]*clusterNode
	mu      sync.Mutex
	live    []string // in the views
	stopped chan struct{}
	hbDone  chan struct{}
	// views, if set, replaces the view a node observes.
	views func(node string, v balance.View) balance.View
}

type clusterNode struct {
	id     string
	gate   *runner.Balance
	sups   map[string]*runner.Supervisor
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newCluster(t *testing.T, projectors int) *cluster {
	c := &cluster{t: t, mem: memtest.New(), sinks: map[string]*recordingSink{}, nodes: map[string]*clusterNode{},
		stopped: make(chan struct{}), hbDone: make(chan struct{})}
	for i := range projectors {
		name := fmt.Sprintf("p%02d", i)
		c.names = append(c.names, name)
		c.sinks[name] = &recordingSink{}
		c.mem.SetSink(name, c.sinks[name])
	}
	go c.heartbeat()
	t.Cleanup(func() {
		close(c.stopped)
		<-c.hbDone
		for _, n := range c.nodeList() {
			c.stop(n.id)
		}
	})
	return c
}

func (c *cluster) nodeList() []*clusterNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*clusterNode, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, n)
	}
	return out
}

func (c *cluster) heartbeat() {
	defer close(c.hbDone)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.stopped:
			return
		case <-tick.C:
		}
		c.mu.Lock()
		live := slices.Clone(c.live)
		nodes := make([]*clusterNode, 0, len(c.nodes))
		for _, n := range c.nodes {
			nodes = append(nodes, n)
		}
		views := c.views
		c.mu.Unlock()
		v := c.mem.View(live...)
		for _, n := range nodes {
			nv := v
			if views != nil {
				nv = views(n.id, v)
			}
			n.gate.Observe(nv)
		}
		// The acquire tick.
		c.mem.Nudge()
	}
}

// start starts node id's supervisors and makes it live in the views.
func (c *cluster) start(id string) *clusterNode {
	weights := map[string]int{}
	for _, p := range c.names {
		weights[p] = 1
	}
	gate := runner.NewBalance(runner.BalanceConfig{Enabled: true, Node: id, Weights: weights,
		Grace: 300 * time.Millisecond, Cooldown: 300 * time.Millisecond, Logger: zaptest.NewLogger(c.t).Named(id)})
	backend := c.mem.Node(id).WithBalance(gate)
	ctx, cancel := context.WithCancel(context.Background())
	n := &clusterNode{id: id, gate: gate, sups: map[string]*runner.Supervisor{}, cancel: cancel}
	for _, p := range c.names {
		s := runner.NewSupervisor(runner.Projector{Name: p, BatchSize: 20, Logger: zaptest.NewLogger(c.t).Named(id)}, backend)
		n.sups[p] = s
		n.wg.Add(1)
		go func() { defer n.wg.Done(); _ = s.Run(ctx) }()
	}
	c.mu.Lock()
	c.nodes[id] = n
	c.live = append(c.live, id)
	slices.Sort(c.live)
	c.mu.Unlock()
	return n
}

// stop stops node id gracefully: it leaves the views and its supervisors
// release what they lead (the leave announcement is coord's, tested there).
func (c *cluster) stop(id string) {
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.live = slices.DeleteFunc(c.live, func(x string) bool { return x == id })
	c.mu.Unlock()
	if n == nil {
		return
	}
	n.gate.Stop()
	n.cancel()
	n.wg.Wait()
}

// leads returns how many projectors each live node leads.
func (c *cluster) leads() map[string]int {
	out := map[string]int{}
	for _, n := range c.nodeList() {
		out[n.id] = 0
	}
	for _, p := range c.names {
		if l := c.mem.Leader(p); l != "" {
			out[l]++
		}
	}
	return out
}

func (c *cluster) epochs() int64 {
	var sum int64
	for _, p := range c.names {
		if cp, ok := c.mem.Checkpoint(p); ok {
			sum += cp.Epoch
		}
	}
	return sum
}

// waitShares waits until the live nodes lead want projectors each (in
// any order), every projector is led, and every leader has claimed (so
// epochs count every move so far).
func (c *cluster) waitShares(want ...int) {
	c.t.Helper()
	testsupport.Until(c.t, fmt.Sprintf("shares %v", want), 20*time.Second, func() bool {
		got := []int{}
		total := 0
		for _, n := range c.leads() {
			got = append(got, n)
			total += n
		}
		slices.Sort(got)
		if !slices.Equal(got, want) || total != len(c.names) {
			return false
		}
		for _, p := range c.names {
			if cp, ok := c.mem.Checkpoint(p); !ok || cp.LeaderNode != c.mem.Leader(p) {
				return false
			}
		}
		return true
	})
}

// TestBalancedSupervisorsShareAndMoveOnlyWhatMust: supervisors of three
// replicas in memory share 12 projectors 4/4/4 however they joined; a
// replica that stops has its share spread over the others, one that joins
// takes its own; each change moves only that share; every event is
// applied once.
func TestBalancedSupervisorsShareAndMoveOnlyWhatMust(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 12)
	writerDone := make(chan struct{})
	stopWriter := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			select {
			case <-stopWriter:
				return
			case <-time.After(time.Millisecond):
			}
			c.mem.AppendCommitted(fmt.Sprintf("s-%d", i), "A", "{}")
		}
	}()
	c.start("a")
	c.waitShares(12)
	c.start("b")
	c.waitShares(6, 6)
	e := c.epochs()
	c.start("c")
	c.waitShares(4, 4, 4)
	require.Equal(t, int64(4), c.epochs()-e, "a join moves only the joiner's share")

	// Settled: nothing moves any more.
	e = c.epochs()
	for range 30 {
		c.mem.Nudge()
		time.Sleep(10 * time.Millisecond) // a quiet period, measured: not synchronisation
	}
	require.Equal(t, e, c.epochs(), "leaderships kept moving once shared")

	c.stop("b")
	c.waitShares(6, 6)
	require.Equal(t, int64(4), c.epochs()-e, "a stop moves only the stopped replica's share")

	close(stopWriter)
	<-writerDone
	head := headOf(c.mem)
	for _, p := range c.names {
		waitCheckpoint(t, c.mem, p, func(cp store.Checkpoint) bool { return cp.Cursor == head })
		require.Empty(t, c.sinks[p].duplicates(), "%s applied an event twice", p)
	}
	n := c.sinks[c.names[0]].count()
	for _, p := range c.names {
		require.Equal(t, n, c.sinks[p].count(), "every projector applied every event")
	}
}

// TestReplicasThatBothMayTryStillHaveOneLeader: views that disagree can
// make two replicas both admit the same projector at the same moment
// (each believes the other is not live); the lock decides, so one leads
// and the other is refused, never both.
func TestReplicasThatBothMayTryStillHaveOneLeader(t *testing.T) {
	t.Parallel()
	mem := memtest.New()
	mem.SetSink("p", &recordingSink{})
	gates := map[string]*runner.Balance{}
	nodes := map[string]*memtest.Node{}
	for _, id := range []string{"a", "b"} {
		gates[id] = runner.NewBalance(runner.BalanceConfig{Enabled: true, Node: id, Weights: map[string]int{"p": 1},
			Grace: time.Hour, Cooldown: time.Hour})
		// Each sees only itself: each has room for p.
		gates[id].Observe(mem.View(id))
		nodes[id] = mem.Node(id).WithBalance(gates[id])
	}
	for round := range 50 {
		var wg sync.WaitGroup
		leases := make([]runner.Lease, 2)
		errs := make([]error, 2)
		for i, id := range []string{"a", "b"} {
			wg.Add(1)
			go func() { defer wg.Done(); leases[i], errs[i] = nodes[id].TryAcquire(t.Context(), "p") }()
		}
		wg.Wait()
		won := 0
		for i := range leases {
			if errs[i] == nil {
				won++
				continue
			}
			require.ErrorIs(t, errs[i], runner.ErrNotLeader)
			require.False(t, errors.Is(errs[i], runner.ErrBalanced), "round %d: both were admitted, the lock refused one", round)
		}
		require.Equal(t, 1, won, "round %d: exactly one lease", round)
		for _, l := range leases {
			if l != nil {
				require.NoError(t, l.Release(t.Context()))
			}
		}
		// The refused one counts p held until its next view; the winner
		// records its leadership's end as the lease ends.
		for _, id := range []string{"a", "b"} {
			gates[id].Observe(mem.View(id))
			testsupport.Until(t, id+" leads nothing", 5*time.Second, func() bool {
				st := gates[id].Status()
				return st != nil && len(st.Nodes) == 1 && len(st.Nodes[0].Leads) == 0
			})
		}
	}
}

// TestDisagreeingViewsNeverLeaveAProjectorUnled: b's view is stuck (it
// believes a leads both projectors), so b refuses both; a, seeing b
// join, hands one over to it and, at its target, will not take it back.
// Without the grace both would refuse it for ever. The grace gives it a
// leader again, and the disagreement settles: leaderships stop moving.
func TestDisagreeingViewsNeverLeaveAProjectorUnled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	stuck := balance.View{Members: []balance.Member{{Node: "a", Session: 1}, {Node: "b", Session: 2}},
		Holders: map[string]string{"p00": "a", "p01": "a"}}
	c.mu.Lock()
	c.views = func(node string, v balance.View) balance.View {
		if node == "b" {
			return stuck
		}
		return v
	}
	c.mu.Unlock()
	c.start("a")
	c.waitShares(2)
	// The longest any projector stays unled from now on, sampled every ms.
	var longest atomic.Int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		since := map[string]time.Time{}
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Millisecond):
			}
			now := time.Now()
			for _, p := range c.names {
				if c.mem.Leader(p) != "" {
					delete(since, p)
					continue
				}
				if _, ok := since[p]; !ok {
					since[p] = now
				}
				if d := int64(now.Sub(since[p])); d > longest.Load() {
					longest.Store(d)
				}
			}
		}
	}()
	e := c.epochs()
	c.start("b")
	testsupport.Until(t, "a hand-over", 5*time.Second, func() bool { return c.epochs() > e })
	// Settled: both led, nothing moves for a while.
	testsupport.Until(t, "settled", 20*time.Second, func() bool {
		before := c.epochs()
		for range 50 {
			time.Sleep(10 * time.Millisecond) // a quiet period, measured: not synchronisation
		}
		return c.epochs() == before && c.mem.Leader("p00") != "" && c.mem.Leader("p01") != ""
	})
	close(stopSampling)
	<-sampled
	// Grace 300 ms, plus up to half again, plus a heartbeat and a try.
	require.Less(t, time.Duration(longest.Load()), 2*time.Second, "a projector stayed unled past its grace")
	require.LessOrEqual(t, c.epochs()-e, int64(4), "the disagreement kept moving leaderships")
}

// TestFlickeringMemberMovesNothing: a replica that drops in and out of the
// others' views (its heartbeat late, every other view) keeps its share:
// while it is out of a view, its projectors are held by a session of no
// live member, and a try for them is refused by the lock; nothing moves.
func TestFlickeringMemberMovesNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 9)
	c.start("a")
	c.start("b")
	c.start("c")
	c.waitShares(3, 3, 3)
	e := c.epochs()
	var flip atomic.Bool
	c.mu.Lock()
	c.views = func(node string, v balance.View) balance.View {
		if node == "c" || !flip.Load() {
			return v
		}
		out := balance.View{Holders: map[string]string{}}
		for _, m := range v.Members {
			if m.Node != "c" {
				out.Members = append(out.Members, m)
			}
		}
		for p, h := range v.Holders {
			if h != "c" {
				out.Holders[p] = h
			}
		}
		return out
	}
	c.mu.Unlock()
	for range 100 {
		flip.Store(!flip.Load())
		time.Sleep(10 * time.Millisecond) // the flicker's period
	}
	require.Equal(t, e, c.epochs(), "a flickering member's share moved")
	c.waitShares(3, 3, 3)
}
