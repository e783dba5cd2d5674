// Package balance decides how replicas share the projectors they all run:
// each replica's target share of the total weight, whether this replica
// may try for a projector now, and which of its projectors it hands over.
//
// It is the policy only. The lock still decides who leads (a replica that
// tries may be refused) and fencing still guarantees that no batch lands
// twice, so a wrong decision here costs a handover, never an event
// (docs/architecture.md, "Balancing"). The package has no database, no
// goroutines and no clock: every call is given the time, so the rules are
// tested fast and deterministically, and the same Balancer runs on
// PostgreSQL (runner.PGBackend) and in memory (memtest).
package balance

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"
)

// Member is a live replica: its node id, and the coordination session its
// node row names (the backend pid on PostgreSQL). A replica that reconnects
// is the same node with another session.
type Member struct {
	Node    string
	Session int64
}

// View is what one read of the coordination database says: the live
// replicas and who leads what.
type View struct {
	// Members are the live replicas: a fresh heartbeat (within
	// lease_timeout) and a coordination session that is still connected.
	// This replica is added if it is missing.
	Members []Member
	// Holders maps a projector to the live member whose session holds its
	// lock. A projector not in it is unled as far as balance goes: nobody
	// holds its lock, or a session of no live member does (a stalled node,
	// which a try for the lock takes over from).
	Holders map[string]string
}

// Targets returns each member's target weight: total split as evenly as
// whole numbers allow, floor(total/R) each and one more for total mod R of
// them. The ones that get one more are those that lead the most now (load;
// ties by node id), so a replica that already holds the larger share keeps
// it: nothing moves for the remainder's sake. Every replica computes the
// same targets from the same view.
func Targets(members []string, load map[string]int, total int) map[string]int {
	out := make(map[string]int, len(members))
	r := len(members)
	if r == 0 {
		return out
	}
	ranked := slices.Clone(members)
	slices.SortFunc(ranked, func(a, b string) int {
		if c := cmp.Compare(load[b], load[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	base, extra := total/r, total%r
	for i, m := range ranked {
		out[m] = base
		if i < extra {
			out[m]++
		}
	}
	return out
}

// Config configures a Balancer.
type Config struct {
	// Self is this replica's node id.
	Self string
	// Weights are the projectors this replica runs, by name, each weighing
	// 1 or more; a projector missing from it weighs 1.
	Weights map[string]int
	// Grace is how long a projector may stay unled in this replica's views
	// before it tries for it whatever its share (plus up to half as much
	// again, drawn per projector so that replicas do not all try at once):
	// when views disagree (a membership change half seen, configurations
	// that differ during a deploy), balance must never leave a projector
	// without a leader.
	Grace time.Duration
	// Cooldown is how long this replica leaves a projector it handed over
	// to the others, unless its grace runs out first.
	Cooldown time.Duration
	// Jitter returns a duration in [0, d); nil draws at random.
	Jitter func(d time.Duration) time.Duration
	// Passive keeps views, targets and shares (for status) but asks for no
	// hand-over: balancing is off.
	Passive bool
}

// Balancer is one replica's balancing state. It is not safe for
// concurrent use: its owner serialises calls.
type Balancer struct {
	cfg Config

	// From the latest view.
	hasView  bool
	view     View
	members  []string // sorted, leaving ones out, self in
	memberOf map[string]bool
	targets  map[string]int
	viewLoad map[string]int // by member, from the view's holders
	total    int
	sig      string    // what a change of wakes standbys
	lastObs  time.Time // when the previous view was observed

	// This replica's leadership, exactly as its leases are.
	held     map[string]time.Time // projector -> when acquired
	pending  map[string]bool      // admitted, attempt in flight
	yielding map[string]bool      // asked to hand over, not ended yet
	pinned   map[string]bool      // taken past grace: not handed over until membership changes
	// Their weights, kept as they change: every standby asks Admit at
	// every acquire tick, which must not cost a walk over every lease.
	heldW, pendingW, yieldingW int
	// hints since the latest view: a release NOTIFY (free) or a refused
	// try (held) says more than a view read before it.
	hints map[string]bool // true: free, false: held

	unled     map[string]time.Time     // first seen unled, while it stays so
	grace     map[string]time.Duration // drawn when first seen unled
	yieldedAt map[string]time.Time
	inactive  map[string]bool // halted: no one can lead it
	leaving   map[Member]bool // announced their stop
	// leavingNodes are the nodes of leaving that the view still has: what
	// they hold is theirs until they release it (with a NOTIFY).
	leavingNodes map[string]bool
	stopping     bool
	// capacityRefused is set when Admit refused for want of room since the
	// last wake: room freed by a refused try is then worth a wake.
	capacityRefused bool
}

// New returns a Balancer with no view yet: it admits nothing until the
// first Observe, so a replica that starts does not take everything before
// it knows who else runs.
func New(cfg Config) *Balancer {
	if cfg.Jitter == nil {
		cfg.Jitter = func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return rand.N(d)
		}
	}
	return &Balancer{cfg: cfg, held: map[string]time.Time{}, pending: map[string]bool{}, yielding: map[string]bool{},
		pinned: map[string]bool{}, hints: map[string]bool{}, unled: map[string]time.Time{}, grace: map[string]time.Duration{},
		yieldedAt: map[string]time.Time{}, inactive: map[string]bool{}, leaving: map[Member]bool{}}
}

func (b *Balancer) weight(p string) int {
	if w, ok := b.cfg.Weights[p]; ok && w > 0 {
		return w
	}
	return 1
}

// Observe takes a new view. It returns the projectors this replica should
// hand over now (each at its next batch boundary), and whether standbys
// should try again at once because what they may try for changed.
func (b *Balancer) Observe(v View, now time.Time) (yield []string, wake bool) {
	first := !b.hasView
	b.hasView, b.view = true, v
	clear(b.hints)
	// Announced stops are forgotten once their session is gone from the
	// view: the node stopped, or came back with another session.
	present := map[Member]bool{}
	for _, m := range v.Members {
		present[m] = true
	}
	for m := range b.leaving {
		if !present[m] {
			delete(b.leaving, m)
		}
	}
	before := slices.Clone(b.members)
	expired := b.recompute(now)
	b.lastObs = now
	if !slices.Equal(before, b.members) {
		// A membership change is when shares move: what was taken past
		// grace may move with them.
		clear(b.pinned)
	}
	return b.yields(), first || b.resign() || expired
}

// recompute derives members, loads, targets and unled times from the view
// and the announced stops, and reports whether a grace ran out since the
// previous view (once per projector, so a projector that stays unled past
// its grace, such as one a stalled node still holds, wakes nobody at every
// view).
func (b *Balancer) recompute(now time.Time) (graceExpired bool) {
	b.members = b.members[:0]
	b.memberOf = map[string]bool{}
	b.leavingNodes = map[string]bool{}
	for _, m := range b.view.Members {
		if b.leaving[m] {
			b.leavingNodes[m.Node] = true
			continue
		}
		if m.Node == b.cfg.Self || b.memberOf[m.Node] {
			continue
		}
		b.memberOf[m.Node] = true
		b.members = append(b.members, m.Node)
	}
	if !b.stopping {
		b.memberOf[b.cfg.Self] = true
		b.members = append(b.members, b.cfg.Self)
	}
	slices.Sort(b.members)

	b.total = 0
	b.viewLoad = map[string]int{}
	for p := range b.cfg.Weights {
		if b.inactive[p] {
			delete(b.unled, p)
			continue
		}
		w := b.weight(p)
		b.total += w
		if h, ok := b.view.Holders[p]; ok && b.memberOf[h] {
			b.viewLoad[h] += w
			delete(b.unled, p)
			continue
		}
		since, ok := b.unled[p]
		if !ok {
			b.unled[p] = now
			b.grace[p] = b.cfg.Grace + b.cfg.Jitter(b.cfg.Grace/2+1)
			continue
		}
		if end := since.Add(b.grace[p]); end.After(b.lastObs) && !now.Before(end) {
			graceExpired = true
		}
	}
	b.targets = Targets(b.members, b.viewLoad, b.total)
	return graceExpired
}

// resign reports whether what standbys may try for changed since the
// last call: the members, this replica's target, or the set of unled
// projectors.
func (b *Balancer) resign() bool {
	sig := make([]byte, 0, 64)
	for _, m := range b.members {
		sig = append(sig, m...)
		sig = append(sig, 0)
	}
	sig = strconv.AppendInt(sig, int64(b.targets[b.cfg.Self]), 10)
	sig = append(sig, 0)
	unled := make([]string, 0, len(b.unled))
	for p := range b.unled {
		unled = append(unled, p)
	}
	slices.Sort(unled)
	for _, p := range unled {
		sig = append(sig, p...)
		sig = append(sig, 0)
	}
	changed := string(sig) != b.sig
	b.sig = string(sig)
	return changed
}

// heldWeight is the weight of what this replica leads, less what it is
// handing over already.
func (b *Balancer) heldWeight() int { return b.heldW - b.yieldingW }

// yields picks what to hand over: only while this replica stays at or
// above its target without it (so it never needs it back), newest
// leadership first (the oldest ones stay put, so a membership change
// moves only what must move), never what it took past grace (nobody else
// wanted it: handing it over would only leave it unled again).
func (b *Balancer) yields() []string {
	if !b.hasView || b.stopping || b.cfg.Passive {
		return nil
	}
	target := b.targets[b.cfg.Self]
	load := b.heldWeight()
	if load <= target {
		return nil
	}
	cands := make([]string, 0, len(b.held))
	for p := range b.held {
		if !b.yielding[p] && !b.pinned[p] {
			cands = append(cands, p)
		}
	}
	slices.SortFunc(cands, func(x, y string) int {
		if c := b.held[y].Compare(b.held[x]); c != 0 {
			return c
		}
		return cmp.Compare(x, y)
	})
	var out []string
	for _, p := range cands {
		if w := b.weight(p); load-w >= target {
			load -= w
			b.yielding[p] = true
			b.yieldingW += w
			out = append(out, p)
		}
	}
	return out
}

// Admit reports whether this replica may try for projector p now. A true
// answer reserves p's weight until the caller reports the try's outcome
// (Acquired, Refused or Failed), so that replicas' supervisors asking at
// the same moment do not together take more than the share.
//
// It admits a projector that no live member other than this one leads
// whatever the share when the projector is recorded halted (SetActive);
// otherwise
// (as far as the latest view and the hints since say) when this replica
// has room for it (load + weight <= target), or when no member has room
// for it and this one is below its target (a projector heavier than every
// free share), or whatever the share once the projector has been unled
// past its grace. It refuses one handed over within Cooldown, unless its
// grace ran out.
func (b *Balancer) Admit(p string, now time.Time) bool {
	if !b.hasView || b.stopping {
		return false
	}
	if _, ok := b.held[p]; ok || b.pending[p] {
		return false
	}
	free, hinted := b.hints[p]
	if !hinted {
		// A stopping replica's projectors are not free before it releases
		// them: a try now would only be refused (and cost a takeover
		// check) ahead of the release NOTIFY that frees each of them.
		h, ok := b.view.Holders[p]
		free = !ok || (!b.memberOf[h] && !b.leavingNodes[h]) || h == b.cfg.Self
	}
	if !free {
		return false
	}
	if b.inactive[p] {
		// Recorded halted: no one can lead it, so a try costs no share. It
		// is how a replica learns of the halt (the claim is refused) and
		// reports it, as every replica must; a resumed projector is led
		// again by whoever tries first, and handed over if that puts it
		// over its share.
		b.reserve(p)
		return true
	}
	since, unled := b.unled[p]
	graceOver := unled && !now.Before(since.Add(b.grace[p]))
	if at, ok := b.yieldedAt[p]; ok && !graceOver && now.Before(at.Add(b.cfg.Cooldown)) {
		return false
	}
	w := b.weight(p)
	load := b.localLoad()
	target := b.targets[b.cfg.Self]
	if load+w <= target || (load < target && b.noRoom(w)) || graceOver {
		b.reserve(p)
		return true
	}
	b.capacityRefused = true
	return false
}

// localLoad is what this replica leads or is trying for.
func (b *Balancer) localLoad() int { return b.heldW + b.pendingW }

func (b *Balancer) reserve(p string) {
	b.pending[p] = true
	b.pendingW += b.weight(p)
}

func (b *Balancer) unreserve(p string) {
	if b.pending[p] {
		delete(b.pending, p)
		b.pendingW -= b.weight(p)
	}
}

// noRoom reports whether no member has room for a projector of weight w.
func (b *Balancer) noRoom(w int) bool {
	for _, m := range b.members {
		load := b.viewLoad[m]
		if m == b.cfg.Self {
			load = b.localLoad()
		}
		if load+w <= b.targets[m] {
			return false
		}
	}
	return true
}

// Acquired records that the admitted try for p won the lock.
func (b *Balancer) Acquired(p string, now time.Time) {
	b.unreserve(p)
	if _, ok := b.held[p]; !ok {
		b.heldW += b.weight(p)
	}
	b.held[p] = now
	since, unled := b.unled[p]
	if unled && !now.Before(since.Add(b.grace[p])) && b.heldWeight() > b.targets[b.cfg.Self] {
		b.pinned[p] = true
	}
	delete(b.unled, p)
	delete(b.yieldedAt, p)
}

// Refused records that the admitted try for p found its lock held: p is
// taken as held until the next view. It reports whether standbys should
// try again (room was freed that another projector was refused for).
func (b *Balancer) Refused(p string) (wake bool) {
	b.unreserve(p)
	b.hints[p] = false
	wake = b.capacityRefused
	b.capacityRefused = false
	return wake
}

// Failed records that the admitted try for p did not get an answer (the
// session is down, a deadline passed): the reservation is returned.
func (b *Balancer) Failed(p string) {
	b.unreserve(p)
}

// Ended records that this replica's leadership of p ended (released,
// handed over or lost).
func (b *Balancer) Ended(p string, now time.Time) {
	if _, ok := b.held[p]; !ok {
		return
	}
	delete(b.held, p)
	b.heldW -= b.weight(p)
	delete(b.pinned, p)
	if b.yielding[p] {
		delete(b.yielding, p)
		b.yieldingW -= b.weight(p)
		b.yieldedAt[p] = now
	}
}

// Released records a hint that another replica released p's lock (its
// NOTIFY): p counts as free until the next view.
func (b *Balancer) Released(p string) {
	if _, ok := b.held[p]; !ok {
		b.hints[p] = true
	}
}

// Leaving records that member m announced its stop: it counts as gone
// from now on, so its share is spread as it releases it rather than at the
// next view. It reports whether standbys should try again.
func (b *Balancer) Leaving(m Member, now time.Time) (wake bool) {
	if b.leaving[m] {
		return false
	}
	b.leaving[m] = true
	if !b.hasView {
		return false
	}
	b.recompute(now)
	return b.resign()
}

// Stop makes this replica leave: it admits nothing more and hands nothing
// over (its supervisors are stopping and release everything anyway).
func (b *Balancer) Stop() { b.stopping = true }

// Forget drops the view (the coordination session is down): nothing is
// admitted until the next Observe.
func (b *Balancer) Forget() {
	b.hasView = false
	b.sig = ""
	clear(b.hints)
}

// SetActive records whether p can be led at all: a halted projector is
// led by no replica until an operator resumes it, so it is left out of
// the total that shares are cut from (from the next view on), and every
// replica may try for it (Admit).
func (b *Balancer) SetActive(p string, active bool) {
	if active {
		delete(b.inactive, p)
	} else {
		b.inactive[p] = true
	}
}

// Share is how the projectors are shared in this replica's latest view.
type Share struct {
	// Valid is false before the first view and while the session is down.
	Valid bool
	// Total is the weight shared: every active projector's.
	Total int
	// Members are the live replicas as this replica sees them, by node id.
	Members []MemberShare
}

// MemberShare is one replica's share.
type MemberShare struct {
	Node string
	// Target is its target weight; Weight what it leads (for this replica,
	// its own leases; for the others, the view's holders).
	Target, Weight int
	// Leads are the projectors it leads, by name.
	Leads []string
}

// Share returns the current share.
func (b *Balancer) Share() Share {
	if !b.hasView {
		return Share{}
	}
	s := Share{Valid: true, Total: b.total}
	leads := map[string][]string{}
	for p, h := range b.view.Holders {
		if h != b.cfg.Self && b.memberOf[h] {
			leads[h] = append(leads[h], p)
		}
	}
	for p := range b.held {
		leads[b.cfg.Self] = append(leads[b.cfg.Self], p)
	}
	for _, m := range b.members {
		ls := leads[m]
		slices.Sort(ls)
		w := 0
		for _, p := range ls {
			w += b.weight(p)
		}
		s.Members = append(s.Members, MemberShare{Node: m, Target: b.targets[m], Weight: w, Leads: ls})
	}
	return s
}

// Target is this replica's target weight in its latest view (0 without one).
func (b *Balancer) Target() int { return b.targets[b.cfg.Self] }
