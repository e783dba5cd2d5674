package balance

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func noJitter(time.Duration) time.Duration { return 0 }

func unitWeights(n int) map[string]int {
	w := map[string]int{}
	for i := range n {
		w[fmt.Sprintf("p%02d", i)] = 1
	}
	return w
}

func members(nodes ...string) []Member {
	out := make([]Member, len(nodes))
	for i, n := range nodes {
		out[i] = Member{Node: n, Session: int64(100 + i)}
	}
	return out
}

func TestTargets(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		members []string
		load    map[string]int
		total   int
		want    map[string]int
	}{
		{"even", []string{"a", "b", "c"}, nil, 30, map[string]int{"a": 10, "b": 10, "c": 10}},
		{"remainder to the lowest ids when nobody leads", []string{"c", "a", "b"}, nil, 32, map[string]int{"a": 11, "b": 11, "c": 10}},
		{"remainder to those that lead most", []string{"a", "b", "c"}, map[string]int{"c": 16, "b": 15}, 31, map[string]int{"a": 10, "b": 10, "c": 11}},
		{"fewer projectors than replicas", []string{"a", "b", "c"}, map[string]int{"c": 1}, 2, map[string]int{"a": 1, "b": 0, "c": 1}},
		{"one replica takes all", []string{"a"}, nil, 7, map[string]int{"a": 7}},
		{"nothing to share", []string{"a", "b"}, nil, 0, map[string]int{"a": 0, "b": 0}},
		{"no members", nil, nil, 5, map[string]int{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Targets(c.members, c.load, c.total)
			require.Equal(t, c.want, got)
			sum := 0
			for _, v := range got {
				sum += v
			}
			if len(c.members) > 0 {
				require.Equal(t, c.total, sum, "targets add up to the total")
			}
		})
	}
}

// newB returns a balancer for self over n unit projectors with grace and
// cooldown 1s and no jitter.
func newB(self string, weights map[string]int) *Balancer {
	return New(Config{Self: self, Weights: weights, Grace: time.Second, Cooldown: time.Second, Jitter: noJitter})
}

func TestAdmit(t *testing.T) {
	t.Parallel()
	// Three members, six projectors: targets 2 each. b leads p00 and p01, c
	// leads nothing; a stalled node x holds p05.
	view := View{Members: members("a", "b", "c"), Holders: map[string]string{"p00": "b", "p01": "b", "p05": "x"}}
	cases := []struct {
		name  string
		setup func(b *Balancer)
		p     string
		at    time.Duration
		want  bool
	}{
		{"no view yet", func(b *Balancer) { b.Forget() }, "p02", 0, false},
		{"room for an unled one", nil, "p02", 0, true},
		{"led by a live member", nil, "p00", 0, false},
		{"held by a session of no live member: tried, so the stalled node is taken over", nil, "p05", 0, true},
		{"a release NOTIFY beats the view", func(b *Balancer) { b.Released("p00") }, "p00", 0, true},
		{"a refused try beats the view", func(b *Balancer) {
			require.True(t, b.Admit("p02", t0))
			b.Refused("p02")
		}, "p02", 0, false},
		{"full share", func(b *Balancer) {
			b.Acquired("p02", t0)
			b.Acquired("p03", t0)
		}, "p04", 0, false},
		{"full share, but unled past grace", func(b *Balancer) {
			b.Acquired("p02", t0)
			b.Acquired("p03", t0)
		}, "p04", time.Second, true},
		{"a pending try counts against the share", func(b *Balancer) {
			require.True(t, b.Admit("p02", t0))
			require.True(t, b.Admit("p03", t0))
		}, "p04", 0, false},
		{"already held", func(b *Balancer) { b.Acquired("p02", t0) }, "p02", 0, false},
		{"recorded halted: tried whatever the share, so this replica learns of the halt", func(b *Balancer) {
			b.Acquired("p02", t0)
			b.Acquired("p03", t0)
			b.SetActive("p04", false)
		}, "p04", 0, true},
		{"stopping", func(b *Balancer) { b.Stop() }, "p02", 0, false},
		{"handed over within the cooldown", func(b *Balancer) {
			b.Acquired("p02", t0)
			b.yielding["p02"] = true
			b.Ended("p02", t0)
			b.Released("p02")
		}, "p02", 500 * time.Millisecond, false},
		{"handed over, cooldown passed", func(b *Balancer) {
			b.Acquired("p02", t0)
			b.yielding["p02"] = true
			b.Ended("p02", t0)
			b.Released("p02")
		}, "p02", 1500 * time.Millisecond, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := newB("a", unitWeights(6))
			b.Observe(view, t0)
			if c.setup != nil {
				c.setup(b)
			}
			if c.at > 0 {
				// Views keep coming while time passes; hints last until one.
				hints := maps(b.hints)
				b.Observe(view, t0.Add(c.at))
				for p, v := range hints {
					b.hints[p] = v
				}
			}
			require.Equal(t, c.want, b.Admit(c.p, t0.Add(c.at)))
		})
	}
}

func maps(m map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestAdmitWeighted(t *testing.T) {
	t.Parallel()
	// Total 12 over two members: targets 6 each. A projector of weight 10
	// fits no one's share; it must still be led, by one with room.
	w := map[string]int{"big": 10, "s1": 1, "s2": 1}
	view := View{Members: members("a", "b"), Holders: map[string]string{}}
	a, b := newB("a", w), newB("b", w)
	a.Observe(view, t0)
	b.Observe(view, t0)
	require.True(t, a.Admit("big", t0), "no member has room for it: one below its target tries")
	a.Acquired("big", t0)
	require.False(t, a.Admit("s1", t0), "a is over its share now")
	view.Holders["big"] = "a"
	yields, _ := a.Observe(view, t0)
	require.Empty(t, yields, "handing over the only projector would leave a below its target")
	b.Observe(view, t0)
	require.True(t, b.Admit("s1", t0))
	require.True(t, b.Admit("s2", t0))
}

func TestYields(t *testing.T) {
	t.Parallel()
	b := newB("a", unitWeights(6))
	for i := range 6 {
		b.Acquired(fmt.Sprintf("p%02d", i), t0.Add(time.Duration(i)*time.Second))
	}
	all := map[string]string{}
	for i := range 6 {
		all[fmt.Sprintf("p%02d", i)] = "a"
	}
	yields, _ := b.Observe(View{Members: members("a"), Holders: all}, t0.Add(10*time.Second))
	require.Empty(t, yields, "alone, a leads all")

	// b and c join: a's target is 2; it hands over the newest four.
	yields, wake := b.Observe(View{Members: members("a", "b", "c"), Holders: all}, t0.Add(11*time.Second))
	require.True(t, wake)
	require.ElementsMatch(t, []string{"p05", "p04", "p03", "p02"}, yields)
	yields, _ = b.Observe(View{Members: members("a", "b", "c"), Holders: all}, t0.Add(12*time.Second))
	require.Empty(t, yields, "what is being handed over is not asked for again")
	for _, p := range []string{"p02", "p03", "p04", "p05"} {
		b.Ended(p, t0.Add(12*time.Second))
	}
	require.False(t, b.Admit("p05", t0.Add(12*time.Second)), "a does not take back what it handed over")
}

func TestPinnedAfterGraceIsNotHandedOver(t *testing.T) {
	t.Parallel()
	// a's view says b has room for p01, but b runs another configuration
	// and never takes it: a takes it past grace, and keeps it.
	w := unitWeights(2)
	b := newB("a", w)
	view := View{Members: members("a", "b"), Holders: map[string]string{"p00": "a"}}
	b.Acquired("p00", t0)
	b.Observe(view, t0)
	require.False(t, b.Admit("p01", t0))
	b.Observe(view, t0.Add(time.Second))
	require.True(t, b.Admit("p01", t0.Add(time.Second)), "unled past grace")
	b.Acquired("p01", t0.Add(time.Second))
	view.Holders["p01"] = "a"
	for i := 2; i < 10; i++ {
		yields, _ := b.Observe(view, t0.Add(time.Duration(i)*time.Second))
		require.NotContains(t, yields, "p01", "handing it over would leave it unled again")
	}
}

func TestLeavingSpreadsTheShareAtOnce(t *testing.T) {
	t.Parallel()
	b := newB("a", unitWeights(4))
	view := View{Members: members("a", "b"), Holders: map[string]string{"p00": "a", "p01": "a", "p02": "b", "p03": "b"}}
	b.Acquired("p00", t0)
	b.Acquired("p01", t0)
	b.Observe(view, t0)
	require.Equal(t, 2, b.Target())
	require.True(t, b.Leaving(view.Members[1], t0), "b's stop raises a's target")
	require.Equal(t, 4, b.Target())
	require.False(t, b.Admit("p02", t0), "b still holds it: a try would be refused")
	b.Released("p02")
	require.True(t, b.Admit("p02", t0), "a takes b's projectors as b releases them, before any view")
	// b restarts with another session: it counts again.
	view.Members[1].Session = 999
	view.Holders = map[string]string{"p00": "a", "p01": "a", "p02": "a"}
	b.Acquired("p02", t0)
	b.Observe(view, t0.Add(time.Second))
	require.Equal(t, 2, b.Target())
}

func TestHaltedProjectorsAreNoOnesShare(t *testing.T) {
	t.Parallel()
	b := newB("a", unitWeights(4))
	view := View{Members: members("a", "b"), Holders: map[string]string{}}
	b.Observe(view, t0)
	require.Equal(t, 2, b.Target())
	b.SetActive("p00", false)
	b.SetActive("p01", false)
	b.Observe(view, t0)
	require.Equal(t, 1, b.Target(), "two halted projectors leave two to share")
	require.Equal(t, 2, b.Share().Total)
	b.SetActive("p00", true)
	b.Observe(view, t0)
	require.Equal(t, 3, b.Share().Total)
}

func TestNoViewAdmitsNothing(t *testing.T) {
	t.Parallel()
	b := newB("a", unitWeights(3))
	require.False(t, b.Admit("p00", t0))
	_, wake := b.Observe(View{Members: members("a")}, t0)
	require.True(t, wake, "the first view wakes standbys")
	require.True(t, b.Admit("p00", t0))
	b.Forget()
	require.False(t, b.Admit("p01", t0), "a session that is down has no view")
}
