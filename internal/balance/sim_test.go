package balance

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sim is a cluster of replicas running the rules against one lock table,
// in rounds of simTick. In each round every live replica, in a random
// order, reads the present view (unless its heartbeat is not due: with
// probability stale it keeps the view it has, so replicas' views lag each
// other as heartbeats out of step do, though each replica's own views
// only move forward, as reads of the database do), hands over what it is
// asked to, and lets all its standbys ask Admit at once before their
// tries are settled one by one in a random order, as concurrent
// supervisors would. A try wins the lock only if nobody holds it: the
// lock, not the rules, guarantees one leader.
type sim struct {
	t       *testing.T
	rng     *rand.Rand
	now     time.Time
	weights map[string]int
	names   []string
	locks   map[string]string // projector -> node
	nodes   map[string]*simNode
	stale   float64
	session int64
	moves   int
	// unledSince is when each projector last lost its leader; maxUnled is
	// the longest it stayed so.
	unledSince map[string]time.Time
	maxUnled   time.Duration
	nextID     int
}

type simNode struct {
	id      string
	session int64
	b       *Balancer
	// runs is the projectors in this node's configuration: during a
	// deploy, replicas may run different sets.
	runs map[string]bool
}

const (
	simTick  = 100 * time.Millisecond
	simGrace = time.Second
)

func newSim(t *testing.T, seed uint64, weights map[string]int) *sim {
	s := &sim{t: t, rng: rand.New(rand.NewPCG(seed, 42)), now: t0, weights: weights, locks: map[string]string{},
		nodes: map[string]*simNode{}, unledSince: map[string]time.Time{}}
	for p := range weights {
		s.names = append(s.names, p)
		s.unledSince[p] = s.now
	}
	slices.Sort(s.names)
	return s
}

func (s *sim) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(s.rng.Int64N(int64(d)))
}

func (s *sim) join() *simNode {
	s.nextID++
	return s.joinAs(fmt.Sprintf("n%02d", s.nextID), nil)
}

// joinAs starts node id running the projectors of runs (nil: all).
func (s *sim) joinAs(id string, runs map[string]bool) *simNode {
	s.session++
	w := map[string]int{}
	for p, x := range s.weights {
		if runs == nil || runs[p] {
			w[p] = x
		}
	}
	if runs == nil {
		runs = map[string]bool{}
		for p := range s.weights {
			runs[p] = true
		}
	}
	n := &simNode{id: id, session: s.session, runs: runs,
		b: New(Config{Self: id, Weights: w, Grace: simGrace, Cooldown: simGrace, Jitter: s.jitter})}
	s.nodes[id] = n
	return n
}

// runnable reports whether some live node runs p.
func (s *sim) runnable(p string) bool {
	for _, n := range s.nodes {
		if n.runs[p] {
			return true
		}
	}
	return false
}

// kill ends a node at once, as kill -9 does: its locks go with its session.
func (s *sim) kill(n *simNode) {
	delete(s.nodes, n.id)
	for p, h := range s.locks {
		if h == n.id {
			s.unlock(p)
		}
	}
}

// leave stops a node gracefully: it announces its stop, then releases
// everything with a NOTIFY each.
func (s *sim) leave(n *simNode) {
	n.b.Stop()
	for _, o := range s.nodes {
		if o != n {
			o.b.Leaving(Member{Node: n.id, Session: n.session}, s.now)
		}
	}
	delete(s.nodes, n.id)
	for p, h := range s.locks {
		if h == n.id {
			s.release(n, p)
		}
	}
}

func (s *sim) unlock(p string) {
	delete(s.locks, p)
	s.unledSince[p] = s.now
}

func (s *sim) release(n *simNode, p string) {
	s.unlock(p)
	n.b.Ended(p, s.now)
	for _, o := range s.nodes {
		if o != n {
			o.b.Released(p)
		}
	}
}

func (s *sim) view() View {
	v := View{Holders: map[string]string{}}
	for _, n := range s.sortedNodes() {
		v.Members = append(v.Members, Member{Node: n.id, Session: n.session})
	}
	for p, h := range s.locks {
		v.Holders[p] = h
	}
	return v
}

// viewFor is v as n reads it: holders of projectors n does not run are
// not in it, as a replica maps only its own projectors' lock ids to names.
func viewFor(v View, n *simNode) View {
	out := View{Members: v.Members, Holders: map[string]string{}}
	for p, h := range v.Holders {
		if n.runs[p] {
			out.Holders[p] = h
		}
	}
	return out
}

func (s *sim) sortedNodes() []*simNode {
	out := make([]*simNode, 0, len(s.nodes))
	for _, n := range s.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *simNode) int { return compareStrings(a.id, b.id) })
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *sim) round() {
	nodes := s.sortedNodes()
	s.rng.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	for _, n := range nodes {
		if _, alive := s.nodes[n.id]; !alive {
			continue
		}
		if s.rng.Float64() >= s.stale {
			yields, _ := n.b.Observe(viewFor(s.view(), n), s.now)
			for _, p := range yields {
				require.Equal(s.t, n.id, s.locks[p], "%s hands over %s, which it does not hold", n.id, p)
				s.release(n, p)
			}
		}
		var admitted []string
		for _, p := range s.names {
			if n.runs[p] && s.locks[p] != n.id && n.b.Admit(p, s.now) {
				admitted = append(admitted, p)
			}
		}
		s.rng.Shuffle(len(admitted), func(i, j int) { admitted[i], admitted[j] = admitted[j], admitted[i] })
		for _, p := range admitted {
			if _, held := s.locks[p]; held {
				n.b.Refused(p)
				continue
			}
			s.locks[p] = n.id
			n.b.Acquired(p, s.now)
			s.moves++
			s.maxUnled = max(s.maxUnled, s.now.Sub(s.unledSince[p]))
		}
	}
	s.now = s.now.Add(simTick)
	for _, n := range s.nodes {
		n.b.checkSums(s.t)
	}
	for _, p := range s.names {
		if _, held := s.locks[p]; held {
			continue
		}
		if !s.runnable(p) {
			// Nobody could lead it: its time unled starts when one can.
			s.unledSince[p] = s.now
			continue
		}
		s.maxUnled = max(s.maxUnled, s.now.Sub(s.unledSince[p]))
	}
}

// loads returns each live node's led weight.
func (s *sim) loads() map[string]int {
	out := map[string]int{}
	for id := range s.nodes {
		out[id] = 0
	}
	for p, h := range s.locks {
		out[h] += s.weights[p]
	}
	return out
}

// balanced reports whether every projector is led and every node leads
// floor or ceil of the total over the nodes.
func (s *sim) balanced() bool {
	if len(s.locks) != len(s.names) {
		return false
	}
	total := 0
	for _, w := range s.weights {
		total += w
	}
	lo := total / len(s.nodes)
	hi := lo
	if total%len(s.nodes) != 0 {
		hi++
	}
	for _, l := range s.loads() {
		if l < lo || l > hi {
			return false
		}
	}
	return true
}

// randomHoldings hands every projector to a random live node, or none, as
// if the cluster had run without balance; each node's Balancer knows its
// own.
func (s *sim) randomHoldings() {
	nodes := s.sortedNodes()
	for _, p := range s.names {
		if s.rng.IntN(4) == 0 {
			continue
		}
		n := nodes[s.rng.IntN(len(nodes))]
		if !n.runs[p] {
			continue
		}
		s.locks[p] = n.id
		n.b.Acquired(p, s.now)
	}
}

// graceBound is how long a projector may stay unled: its grace (with up
// to half again as jitter), plus the rounds it takes to see it unled and
// to try (a replica whose heartbeat is late sees it late: with stale at
// 0.3 a few rounds late at most, in these runs).
const graceBound = simGrace*3/2 + 8*simTick

// TestPropertyConvergesAndNeverLeavesAProjectorUnled: from any holdings,
// through membership changes (kill -9, graceful stops, joins) and stale
// views, no projector stays unled past its grace; once membership holds
// still and views agree, every replica leads floor or ceil of the
// projectors within a bounded number of rounds, and then nothing moves
// any more.
func TestPropertyConvergesAndNeverLeavesAProjectorUnled(t *testing.T) {
	t.Parallel()
	for seed := range uint64(300) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 7))
			s := newSim(t, seed, unitWeights(1+rng.IntN(40)))
			for range 1 + rng.IntN(5) {
				s.join()
			}
			s.randomHoldings()
			s.stale = 0.3
			for range 60 {
				switch x := s.rng.IntN(40); {
				case x == 0 && len(s.nodes) > 1:
					s.kill(s.sortedNodes()[s.rng.IntN(len(s.nodes))])
				case x == 1 && len(s.nodes) > 1:
					s.leave(s.sortedNodes()[s.rng.IntN(len(s.nodes))])
				case x == 2 && len(s.nodes) < 6:
					s.join()
				}
				s.round()
			}
			require.LessOrEqual(t, s.maxUnled, graceBound, "a projector stayed unled past its grace")

			s.stale = 0
			settled := -1
			for i := range 100 {
				s.round()
				if s.balanced() {
					settled = i
					break
				}
			}
			require.GreaterOrEqual(t, settled, 0, "not balanced after 100 rounds: %v (%d projectors)", s.loads(), len(s.names))
			moves := s.moves
			for range 50 {
				s.round()
			}
			require.Equal(t, moves, s.moves, "projectors kept moving once balanced: %v", s.loads())
			require.True(t, s.balanced())
			require.LessOrEqual(t, s.maxUnled, graceBound, "a projector stayed unled past its grace")
		})
	}
}

// TestPropertyWeightedSettles: with weights, shares cannot always be
// floor or ceil; every projector is still led, no projector stays unled
// past its grace, and the cluster settles: nothing moves once views agree.
func TestPropertyWeightedSettles(t *testing.T) {
	t.Parallel()
	for seed := range uint64(200) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 9))
			w := map[string]int{}
			for i := range 1 + rng.IntN(30) {
				w[fmt.Sprintf("p%02d", i)] = 1 + rng.IntN(5)*rng.IntN(3)
			}
			s := newSim(t, seed, w)
			for range 1 + rng.IntN(4) {
				s.join()
			}
			s.randomHoldings()
			s.stale = 0.3
			for range 40 {
				if x := s.rng.IntN(30); x == 0 && len(s.nodes) > 1 {
					s.kill(s.sortedNodes()[s.rng.IntN(len(s.nodes))])
				} else if x == 1 && len(s.nodes) < 5 {
					s.join()
				}
				s.round()
			}
			s.stale = 0
			quiet := 0
			for i := 0; i < 300 && quiet < 50; i++ {
				moves := s.moves
				s.round()
				if s.moves == moves && len(s.locks) == len(s.names) {
					quiet++
				} else {
					quiet = 0
				}
			}
			require.Equal(t, 50, quiet, "did not settle: %v", s.loads())
			require.LessOrEqual(t, s.maxUnled, graceBound, "a projector stayed unled past its grace")
			maxW := 0
			for _, x := range w {
				maxW = max(maxW, x)
			}
			total := 0
			for _, x := range w {
				total += x
			}
			for id, l := range s.loads() {
				require.LessOrEqual(t, l, total/len(s.nodes)+1+maxW, "%s leads far beyond its share: %v", id, s.loads())
			}
		})
	}
}

// TestPropertyDifferingConfigurationsLeaveNothingUnled: during a deploy
// replicas run different sets of projectors, so their totals and targets
// disagree and one may wait for another that never takes a projector.
// Only the grace keeps such a projector led: no projector that some live
// replica runs stays unled past it, and the cluster still settles.
func TestPropertyDifferingConfigurationsLeaveNothingUnled(t *testing.T) {
	t.Parallel()
	for seed := range uint64(200) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 11))
			s := newSim(t, seed, unitWeights(2+rng.IntN(30)))
			for i := range 2 + rng.IntN(3) {
				runs := map[string]bool{}
				for _, p := range s.names {
					runs[p] = rng.IntN(4) != 0
				}
				s.joinAs(fmt.Sprintf("n%02d", i), runs)
			}
			s.randomHoldings()
			s.stale = 0.2
			quiet := 0
			for i := 0; i < 400 && quiet < 50; i++ {
				moves := s.moves
				s.round()
				if s.moves == moves {
					quiet++
				} else {
					quiet = 0
				}
			}
			require.LessOrEqual(t, s.maxUnled, graceBound, "a projector stayed unled past its grace")
			require.Equal(t, 50, quiet, "did not settle: %v", s.loads())
			for _, p := range s.names {
				if s.runnable(p) {
					require.Contains(t, s.locks, p, "%s is run by a live replica but led by none", p)
				}
			}
		})
	}
}

// TestJoinWithTheLowestIDTakesTheSmallerShare: the remainder of an uneven
// split stays with those that already lead the most, so a replica that
// joins takes floor(N/R) whatever its node id, and no more moves.
func TestJoinWithTheLowestIDTakesTheSmallerShare(t *testing.T) {
	t.Parallel()
	s := newSim(t, 1, unitWeights(31))
	s.joinAs("n02", nil)
	s.joinAs("n03", nil)
	for range 20 {
		s.round()
	}
	require.True(t, s.balanced())
	before := s.moves
	s.joinAs("n01", nil)
	for range 40 {
		s.round()
	}
	require.True(t, s.balanced())
	require.Equal(t, 10, s.loads()["n01"])
	require.Equal(t, 10, s.moves-before, "only the joiner's floor(31/3) moved")
}

// TestHandoversPerMembershipChange: with views that agree, a replica
// joining a balanced cluster takes exactly its target, and one leaving
// gives exactly what it led: nothing else moves.
func TestHandoversPerMembershipChange(t *testing.T) {
	t.Parallel()
	for _, n := range []int{30, 31, 7, 500} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			s := newSim(t, uint64(n), unitWeights(n))
			a, b := s.join(), s.join()
			for range 20 {
				s.round()
			}
			require.True(t, s.balanced())
			before := s.moves
			c := s.join()
			for range 40 {
				s.round()
			}
			require.True(t, s.balanced())
			require.Equal(t, s.loads()[c.id], s.moves-before, "a join moves only the joiner's share")
			t.Logf("%d projectors, join of a third replica: %d handovers", n, s.moves-before)

			before = s.moves
			share := s.loads()[a.id]
			s.kill(a)
			for range 40 {
				s.round()
			}
			require.True(t, s.balanced())
			require.Equal(t, share, s.moves-before, "a kill moves only the killed replica's share")

			before = s.moves
			share = s.loads()[b.id]
			s.leave(b)
			for range 40 {
				s.round()
			}
			require.True(t, s.balanced())
			require.Equal(t, share, s.moves-before, "a stop moves only the stopped replica's share")
		})
	}
}

// checkSums fails t unless the running weight sums match the maps.
func (b *Balancer) checkSums(t *testing.T) {
	t.Helper()
	held, pending, yielding := 0, 0, 0
	for p := range b.held {
		held += b.weight(p)
	}
	for p := range b.pending {
		pending += b.weight(p)
	}
	for p := range b.yielding {
		yielding += b.weight(p)
	}
	require.Equal(t, held, b.heldW, "%s: held weight", b.cfg.Self)
	require.Equal(t, pending, b.pendingW, "%s: pending weight", b.cfg.Self)
	require.Equal(t, yielding, b.yieldingW, "%s: yielding weight", b.cfg.Self)
}
