package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/balance"
	"github.com/projectord/projectord/internal/coord"
)

// ErrBalanced means this replica did not try for the projector: it leads
// its share already, or does not know yet who else runs. It is an
// ErrNotLeader: the supervisor waits for its next turn.
var ErrBalanced = fmt.Errorf("%w (this replica leads its share; balance)", ErrNotLeader)

// Yielder is optional on a Lease: a lease that the backend may ask to
// hand over. Yielded is closed when it should be; Run then stops as on a
// graceful stop (the batch in flight commits, the lease is released with a
// NOTIFY) and returns nil.
type Yielder interface {
	Yielded() <-chan struct{}
}

// BalanceConfig configures a Balance.
type BalanceConfig struct {
	// Enabled turns balancing on (coordination.balance). Off, a Balance
	// only keeps the view for status: every try goes to the lock, first
	// come first served, and nothing is ever handed over.
	Enabled bool
	// Node is this replica's node id.
	Node string
	// Weights are this replica's projectors and their weights.
	Weights map[string]int
	// Grace and Cooldown are balance.Config's.
	Grace, Cooldown time.Duration
	Logger          *zap.Logger
	// Clock is time.Now unless a test injects one.
	Clock func() time.Time
}

// Balance applies a balance.Balancer to one replica's leases: it gates
// TryAcquire by Admit and asks leases to hand over when the Balancer says
// so. It implements coord.Observer, fed by the coordination session; a
// memory backend feeds it with Observe.
type Balance struct {
	cfg BalanceConfig
	log *zap.Logger

	mu     sync.Mutex
	b      *balance.Balancer
	names  map[int32]string // lock id -> projector
	leases map[string]*balancedLease
	// passive are the leases held with balancing off, by projector: a
	// standby may win a lock again before the watcher of its previous
	// lease has run, and that late watcher must not end the new one.
	passive map[string]Lease
	wake    func()
	viewAt  time.Time
	asked   int64 // hand-overs asked for
}

var _ coord.Observer = (*Balance)(nil)

// NewBalance returns a Balance with no view yet.
func NewBalance(cfg BalanceConfig) *Balance {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	b := balance.New(balance.Config{Self: cfg.Node, Weights: cfg.Weights, Grace: cfg.Grace, Cooldown: cfg.Cooldown, Passive: !cfg.Enabled})
	return &Balance{cfg: cfg, log: cfg.Logger, b: b, names: map[int32]string{}, leases: map[string]*balancedLease{},
		passive: map[string]Lease{}}
}

// Enabled reports whether balancing is on.
func (g *Balance) Enabled() bool { return g.cfg.Enabled }

// SetWake sets what gives this replica's standbys a turn (the session's
// Nudge), for room freed outside a view.
func (g *Balance) SetWake(wake func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.wake = wake
}

// SetLockID records projector name's lock id, which views name holders by.
func (g *Balance) SetLockID(name string, id int32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.names[id] = name
}

// balancedLease is a lease that can be asked to hand over.
type balancedLease struct {
	Lease
	yield chan struct{}
	once  sync.Once
}

func (l *balancedLease) Yielded() <-chan struct{} { return l.yield }
func (l *balancedLease) ask()                     { l.once.Do(func() { close(l.yield) }) }

// TryAcquire tries for projector name through acquire if this replica may
// (balance.Balancer.Admit), and returns ErrBalanced without a try when it
// may not. Balancing off, it always tries.
func (g *Balance) TryAcquire(ctx context.Context, name string, acquire func(context.Context) (Lease, error)) (Lease, error) {
	if !g.cfg.Enabled {
		l, err := acquire(ctx)
		if err == nil {
			// Tracked for status only: the lease is the lock's, unwrapped.
			g.mu.Lock()
			g.b.Acquired(name, g.cfg.Clock())
			g.passive[name] = l
			g.mu.Unlock()
			go g.watch(name, l, nil)
		}
		return l, err
	}
	g.mu.Lock()
	ok := g.b.Admit(name, g.cfg.Clock())
	g.mu.Unlock()
	if !ok {
		return nil, ErrBalanced
	}
	l, err := acquire(ctx)
	g.mu.Lock()
	var wake func()
	switch {
	case err == nil:
		g.b.Acquired(name, g.cfg.Clock())
		bl := &balancedLease{Lease: l, yield: make(chan struct{})}
		g.leases[name] = bl
		go g.watch(name, l, bl)
		l = bl
	case errors.Is(err, ErrNotLeader):
		if g.b.Refused(name) {
			wake = g.wake
		}
	default:
		g.b.Failed(name)
	}
	g.mu.Unlock()
	if wake != nil {
		wake()
	}
	return l, err
}

// watch records the end of a leadership, however it ends (released,
// handed over, lost): the lease's Done closes on every one. It returns
// when the lease ends.
func (g *Balance) watch(name string, l Lease, bl *balancedLease) {
	<-l.Done()
	g.mu.Lock()
	defer g.mu.Unlock()
	if bl != nil {
		if g.leases[name] != bl {
			return
		}
		delete(g.leases, name)
	} else {
		if g.passive[name] != l {
			return
		}
		delete(g.passive, name)
	}
	g.b.Ended(name, g.cfg.Clock())
}

// Observe takes a view (names, not lock ids) and asks for the hand-overs
// it calls for. It reports whether standbys should try again at once.
func (g *Balance) Observe(v balance.View) (wake bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.cfg.Clock()
	g.viewAt = now
	yields, wake := g.b.Observe(v, now)
	if !g.cfg.Enabled {
		// Status only: shares are shown, nothing is handed over.
		return false
	}
	for _, p := range yields {
		l := g.leases[p]
		if l == nil {
			continue
		}
		g.asked++
		l.ask()
		g.log.Info("handing over to balance the replicas' shares", zap.String("projector", p),
			zap.Int("target", g.b.Target()), zap.Int("members", len(v.Members)))
	}
	return wake
}

// View implements coord.Observer: it maps lock ids to this replica's
// projectors and holders' pids to live nodes. A lock held by a session of
// no live node (a stalled node's) leaves its projector out of Holders.
func (g *Balance) View(v coord.View) bool {
	bv := balance.View{Members: []balance.Member{{Node: v.Self, Session: int64(v.SelfPID)}}, Holders: map[string]string{}}
	node := map[int32]string{v.SelfPID: v.Self}
	for _, m := range v.Members {
		bv.Members = append(bv.Members, balance.Member{Node: m.Node, Session: int64(m.PID)})
		node[m.PID] = m.Node
	}
	g.mu.Lock()
	for _, h := range v.Holders {
		name, ok := g.names[h.ID]
		if !ok {
			continue
		}
		if n, ok := node[h.PID]; ok {
			bv.Holders[name] = n
		}
	}
	g.mu.Unlock()
	return g.Observe(bv)
}

// Released implements coord.Observer.
func (g *Balance) Released(projector string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.b.Released(projector)
}

// Leaving implements coord.Observer.
func (g *Balance) Leaving(node string, pid uint32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	wake := g.b.Leaving(balance.Member{Node: node, Session: int64(pid)}, g.cfg.Clock())
	if wake && g.cfg.Enabled {
		g.log.Info("a replica is stopping; taking its share as it releases it", zap.String("node", node))
	}
	return wake && g.cfg.Enabled
}

// Lost implements coord.Observer.
func (g *Balance) Lost() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.b.Forget()
}

// Stop makes this replica leave: it tries for nothing more and hands
// nothing over while its supervisors stop.
func (g *Balance) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.b.Stop()
}

// SetActive records whether projector can be led (false while halted).
func (g *Balance) SetActive(projector string, active bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.b.SetActive(projector, active)
}

// Status returns the shares of the latest view, nil without one.
func (g *Balance) Status() *BalanceStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	sh := g.b.Share()
	if !sh.Valid {
		return nil
	}
	st := &BalanceStatus{Enabled: g.cfg.Enabled, ViewAt: g.viewAt, TotalWeight: sh.Total, HandOvers: g.asked}
	for _, m := range sh.Members {
		ns := NodeShare{Node: m.Node, Leads: slices.Clone(m.Leads), Weight: m.Weight}
		if ns.Leads == nil {
			ns.Leads = []string{}
		}
		if g.cfg.Enabled {
			target := m.Target
			ns.Target = &target
		}
		st.Nodes = append(st.Nodes, ns)
	}
	return st
}

// Target returns this replica's target weight and whether it has one
// (balancing on, with a view).
func (g *Balance) Target() (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.cfg.Enabled || !g.b.Share().Valid {
		return 0, false
	}
	return g.b.Target(), true
}

// BalanceStats are a replica's balancing figures, as metrics export them.
type BalanceStats struct {
	// Known: the coordination session's view is fresh, so Members is
	// known; TargetKnown: balancing is on too, so Target is.
	Known, TargetKnown bool
	Members, Target    int
	HandOvers          int64
}

// HandOvers is how many hand-overs this replica has asked of its leases.
func (g *Balance) HandOvers() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.asked
}
