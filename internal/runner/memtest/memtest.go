// Package memtest is the in-memory backend of the runner: an event store,
// checkpoint store and lock table that implement the seams of
// internal/runner the way runner.PGBackend does on PostgreSQL, so tests of
// the loop run fast. The shared contract suite (internal/daemon,
// TestBackendContract) holds both to the same behaviour. It is imported by
// tests only.
package memtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/projectord/projectord/internal/balance"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// Memory is an in-memory event store, checkpoint store and lock table. It
// implements the same contract as the Postgres backend, for fast tests of
// the loop. Each replica gets its own view from Node.
type Memory struct {
	mu          sync.Mutex
	events      []store.Event // in position order
	nextXID     uint64
	nextPos     int64
	open        map[uint64]bool // transactions not yet ended
	aborted     map[uint64]bool
	checkpoints map[string]*store.Checkpoint
	locks       map[string]*memLease
	sinks       map[string]Sink
	dead        map[string][]store.DeadLetter
	changed     chan struct{}
	turn        chan struct{}
}

// Sink applies a batch all-or-nothing; on failure it returns
// *store.ApplyError naming the failing event and changes nothing. It runs
// under the store's lock, so Apply must not wait for the store.
type Sink interface {
	Apply(events []store.Event) error
}

// FilterSink is a Sink that acts on some event types only, as a
// store.SQLSink without a "*" handler does. Node then passes it only the
// events it handles (an ApplyError still names its event by its index in
// the whole batch, as store.Target.Commit does), and the loop passes over
// the others (runner.SinkFilter). A Sink that is not a FilterSink handles
// every type.
type FilterSink interface {
	Sink
	Handles(eventType string) bool
}

// CheckedSink is a Sink that can tell, without applying anything, that it
// fails for every event alike: Check returns an error matching
// store.ErrBadHandler then (a store.StatementProblem, say), and any other
// error when the check itself failed. Node.CheckSink runs it at the start
// of each leadership (runner.SinkChecker), as PGBackend prepares and plans
// every handler.
type CheckedSink interface {
	Sink
	Check() error
}

// Fingerprint is the sink fingerprint of a Node (WithSink changes it): the
// halts it records refuse the claims of nodes with the same one.
const Fingerprint = "memory"

// New returns an empty in-memory backend.
func New() *Memory {
	return &Memory{
		nextXID: 1000, nextPos: 1,
		open: map[uint64]bool{}, aborted: map[uint64]bool{},
		checkpoints: map[string]*store.Checkpoint{}, locks: map[string]*memLease{},
		sinks: map[string]Sink{}, dead: map[string][]store.DeadLetter{},
		changed: make(chan struct{}), turn: make(chan struct{}),
	}
}

// SetSink sets the projector's sink.
func (m *Memory) SetSink(projector string, s Sink) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sinks[projector] = s
}

// Tx is an open writer transaction on the memory store.
type Tx struct {
	m   *Memory
	xid uint64
}

// Begin opens a writer transaction; its events stay invisible, and hold the
// horizon back, until it ends.
func (m *Memory) Begin() *Tx {
	m.mu.Lock()
	defer m.mu.Unlock()
	xid := m.nextXID
	m.nextXID++
	m.open[xid] = true
	return &Tx{m: m, xid: xid}
}

// Append adds an event of the given type to the transaction and returns its position.
func (tx *Tx) Append(stream, eventType string, data string) int64 {
	m := tx.m
	m.mu.Lock()
	defer m.mu.Unlock()
	pos := m.nextPos
	m.nextPos++
	m.events = append(m.events, store.Event{
		Cursor: store.Cursor{XID: tx.xid, Position: pos}, StreamID: stream, Type: eventType,
		Data: []byte(data), CreatedAt: time.Now(),
	})
	return pos
}

// Commit makes the transaction's events visible.
func (tx *Tx) Commit() { tx.end(false) }

// Rollback discards the transaction's events.
func (tx *Tx) Rollback() { tx.end(true) }

func (tx *Tx) end(abort bool) {
	m := tx.m
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.open, tx.xid)
	if abort {
		m.aborted[tx.xid] = true
	}
	close(m.changed)
	m.changed = make(chan struct{})
}

// AppendCommitted appends events in one committed transaction.
func (m *Memory) AppendCommitted(stream, eventType string, data ...string) {
	tx := m.Begin()
	for _, d := range data {
		tx.Append(stream, eventType, d)
	}
	tx.Commit()
}

// horizon is the oldest xid still open (or the next one): the pg_snapshot_xmin analogue.
func (m *Memory) horizon() uint64 {
	h := m.nextXID
	for x := range m.open {
		h = min(h, x)
	}
	return h
}

func (m *Memory) visible(e *store.Event, horizon uint64) bool {
	return e.XID < horizon && !m.aborted[e.XID]
}

// sortedVisible returns visible events in cursor order.
func (m *Memory) sortedVisible() []store.Event {
	h := m.horizon()
	out := make([]store.Event, 0, len(m.events))
	for i := range m.events {
		if m.visible(&m.events[i], h) {
			out = append(out, m.events[i])
		}
	}
	// Positions are assigned in order, xids in order of Begin: sort by cursor.
	sortEvents(out)
	return out
}

func sortEvents(es []store.Event) {
	slices.SortFunc(es, func(a, b store.Event) int {
		if a.Cursor.Less(b.Cursor) {
			return -1
		}
		if b.Cursor.Less(a.Cursor) {
			return 1
		}
		return 0
	})
}

// Node returns the backend as seen by replica node.
// Its sink fingerprint is Fingerprint: every node runs the same sinks, as
// replicas with one configuration do.
func (m *Memory) Node(node string) *Node { return &Node{m: m, node: node, sink: Fingerprint} }

// Checkpoint returns the projector's checkpoint.
func (m *Memory) Checkpoint(projector string) (store.Checkpoint, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkpoints[projector]
	if !ok {
		return store.Checkpoint{}, false
	}
	return *c, true
}

// DeadLetters returns the projector's dead letters.
func (m *Memory) DeadLetters(projector string) []store.DeadLetter {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]store.DeadLetter(nil), m.dead[projector]...)
}

// LoseLeases ends every lease node holds, as a dropped coordination session would.
func (m *Memory) LoseLeases(node string) {
	m.mu.Lock()
	var lost []*memLease
	for name, l := range m.locks {
		if l.node == node {
			lost = append(lost, l)
			delete(m.locks, name)
		}
	}
	m.mu.Unlock()
	for _, l := range lost {
		l.end(fmt.Errorf("%w: session of %s dropped", runner.ErrLeaseLost, node))
	}
}

// Leader returns the node holding the projector's lock, or "".
func (m *Memory) Leader(projector string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.locks[projector]; ok {
		return l.node
	}
	return ""
}

func (m *Memory) broadcastTurn() {
	close(m.turn)
	m.turn = make(chan struct{})
}

// Nudge gives every node's standbys a turn, as coord.Session.Nudge does.
func (m *Memory) Nudge() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.broadcastTurn()
}

// View is what a heartbeat of a replica would read with the given nodes
// live: each live node's leases are its holdings; locks of other nodes
// count as held by no live member.
func (m *Memory) View(live ...string) balance.View {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := balance.View{Holders: map[string]string{}}
	alive := map[string]bool{}
	for i, n := range live {
		v.Members = append(v.Members, balance.Member{Node: n, Session: int64(i + 1)})
		alive[n] = true
	}
	for name, l := range m.locks {
		if alive[l.node] {
			v.Holders[name] = l.node
		}
	}
	return v
}

// Node is one replica's view of a Memory backend. It implements
// runner.Backend, runner.SinkFilter and runner.SinkChecker, as
// runner.PGBackend does.
type Node struct {
	m    *Memory
	node string
	// sink is this replica's sink fingerprint (store.SQLSink.Fingerprint):
	// a halt recorded under the same one refuses its claims.
	sink string
	// bal, if set, gates this node's tries and hands its leases over.
	bal *runner.Balance
}

// Name is the node's name.
func (n *Node) Name() string { return n.node }

// WithSink returns the node with its sink fingerprint set to fp: like a
// replica whose handlers differ from those of a replica with another one.
// A node with fingerprint "" names none, as store.Target.Claim: its claims
// end any halt, and the halts it records refuse no claim.
func (n *Node) WithSink(fp string) *Node { return &Node{m: n.m, node: n.node, sink: fp, bal: n.bal} }

// WithBalance returns the node with its tries gated, and its leases handed
// over, by g, as runner.PGBackend does with its Balance. Views reach g
// through g.Observe (Memory.View), as a test heartbeats them.
func (n *Node) WithBalance(g *runner.Balance) *Node {
	g.SetWake(n.m.Nudge)
	return &Node{m: n.m, node: n.node, sink: n.sink, bal: g}
}

// Resume ends the projector's halt, as `projectord resume` does
// (store.Target.Resume). It reports whether the projector was halted.
func (m *Memory) Resume(projector string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkpoints[projector]
	if !ok || c.Status != store.StatusHalted {
		return false
	}
	c.Status, c.LastError, c.Halt, c.UpdatedAt = store.StatusRunning, "", nil, time.Now()
	return true
}

var (
	_ runner.Backend     = (*Node)(nil)
	_ runner.SinkFilter  = (*Node)(nil)
	_ runner.SinkChecker = (*Node)(nil)
)

// Read implements runner.EventReader.
func (n *Node) Read(ctx context.Context, after store.Cursor, f store.Filter, limit int, buf []store.Event) ([]store.Event, error) {
	if err := ctx.Err(); err != nil {
		return buf[:0], err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := buf[:0]
	for _, e := range m.sortedVisible() {
		if !after.Less(e.Cursor) || !f.Matches(&e) {
			continue
		}
		out = append(out, e)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// Head implements runner.EventReader.
func (n *Node) Head() (store.Cursor, <-chan struct{}) {
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	vis := m.sortedVisible()
	var head store.Cursor
	if len(vis) > 0 {
		head = vis[len(vis)-1].Cursor
	}
	return head, m.changed
}

// Claim implements runner.CheckpointStore, as store.Target.ClaimSink: a
// projector halted under this node's fingerprint is not claimed (the epoch
// stays; the error is a *store.HaltedError), and a claim under another one
// ends the halt.
func (n *Node) Claim(ctx context.Context, projector string) (store.Checkpoint, error) {
	if err := ctx.Err(); err != nil {
		return store.Checkpoint{}, err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkpoints[projector]
	if !ok {
		c = &store.Checkpoint{Projector: projector}
		m.checkpoints[projector] = c
	}
	if c.Status == store.StatusHalted && c.Halt != nil {
		if n.sink != "" && c.Halt.Sink == n.sink {
			return *c, &store.HaltedError{Checkpoint: *c}
		}
		c.LastError, c.Halt = "", nil // a changed sink ends the halt
	}
	if strings.HasPrefix(c.LastError, store.ErrOrderingChanged.Error()) {
		// As in ClaimSink: an earlier refusal is this claim's to repeat or
		// end, and memory has one ordering only.
		c.LastError = ""
	}
	now := time.Now()
	c.Epoch++
	c.LeaderNode, c.LeaderSince, c.Status, c.UpdatedAt = n.node, now, store.StatusRunning, now
	return *c, nil
}

// Commit implements runner.CheckpointStore, as store.Target.Commit: the
// sink applies the events it handles, the dead letter is recorded and the
// checkpoint moves, all or nothing, fenced by epoch and cursor.
func (n *Node) Commit(ctx context.Context, req store.CommitRequest) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// As in store.Target.Commit: an undecodable row is poison before the sink sees it.
	for i := range req.Events {
		if bad := req.Events[i].Bad; bad != nil {
			return &store.ApplyError{Index: i, Err: bad}
		}
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkpoints[req.Projector]
	if !ok || c.Epoch != req.Epoch || c.Cursor != req.From {
		return fmt.Errorf("%w: projector %s epoch %d", store.ErrFenced, req.Projector, req.Epoch)
	}
	if s := m.sinks[req.Projector]; s != nil {
		if err := apply(s, req.Events); err != nil {
			return err
		}
	}
	if req.DeadLetter != nil {
		m.dead[req.Projector] = append(m.dead[req.Projector], *req.DeadLetter)
	}
	c.Cursor = req.To
	c.EventsApplied += int64(len(req.Events))
	c.UpdatedAt = time.Now()
	return nil
}

// apply runs s on the events it handles. An ApplyError names its event by
// its index in events, as store.Target.Commit maps each statement to its
// event; events with no handler are skipped, as no statement runs for them.
func apply(s Sink, events []store.Event) error {
	f, ok := s.(FilterSink)
	if !ok {
		if len(events) == 0 {
			return nil
		}
		return s.Apply(events)
	}
	handled := make([]store.Event, 0, len(events))
	owner := make([]int, 0, len(events))
	for i := range events {
		if f.Handles(events[i].Type) {
			handled = append(handled, events[i])
			owner = append(owner, i)
		}
	}
	if len(handled) == 0 {
		return nil
	}
	err := s.Apply(handled)
	var ae *store.ApplyError
	if errors.As(err, &ae) && ae.Index >= 0 && ae.Index < len(owner) {
		return &store.ApplyError{Index: owner[ae.Index], Err: ae.Err}
	}
	return err
}

// SetStatus implements runner.CheckpointStore, as store.Target.SetStatus.
func (n *Node) SetStatus(ctx context.Context, projector string, epoch int64, status, lastErr string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkpoints[projector]
	if !ok || c.Epoch != epoch {
		return store.ErrFenced
	}
	now := time.Now()
	c.Status, c.LastError, c.UpdatedAt = status, lastErr, now
	if lastErr != "" {
		c.LastErrorAt = now
	}
	return nil
}

// Halt implements runner.CheckpointStore, as store.Target.Halt: the halt
// is recorded under this node's fingerprint, fenced by epoch.
func (n *Node) Halt(ctx context.Context, projector string, epoch int64, event *store.Cursor, msg string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.checkpoints[projector]
	if !ok || c.Epoch != epoch {
		return store.ErrFenced
	}
	h := &store.HaltRecord{By: c.LeaderNode, At: time.Now(), Sink: n.sink}
	if event != nil {
		e := *event
		h.Event = &e
	}
	c.Status, c.LastError, c.LastErrorAt, c.UpdatedAt, c.Halt = store.StatusHalted, msg, h.At, h.At, h
	return nil
}

func (m *Memory) sink(projector string) Sink {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sinks[projector]
}

// Handles implements runner.SinkFilter, as PGBackend.Handles: a projector
// without a sink handles nothing; a sink that is not a FilterSink handles
// every type.
func (n *Node) Handles(projector, eventType string) bool {
	s := n.m.sink(projector)
	if f, ok := s.(FilterSink); ok {
		return f.Handles(eventType)
	}
	return s != nil
}

// CheckSink implements runner.SinkChecker, as PGBackend.CheckSink: it runs
// the sink's Check if it is a CheckedSink.
func (n *Node) CheckSink(ctx context.Context, projector string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c, ok := n.m.sink(projector).(CheckedSink); ok {
		return c.Check()
	}
	return nil
}

// TryAcquire implements runner.Coordinator.
func (n *Node) TryAcquire(ctx context.Context, projector string) (runner.Lease, error) {
	if n.bal != nil {
		return n.bal.TryAcquire(ctx, projector, func(context.Context) (runner.Lease, error) { return n.tryAcquire(projector) })
	}
	return n.tryAcquire(projector)
}

func (n *Node) tryAcquire(projector string) (runner.Lease, error) {
	m := n.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, held := m.locks[projector]; held {
		return nil, runner.ErrNotLeader
	}
	l := &memLease{m: m, name: projector, node: n.node, done: make(chan struct{})}
	m.locks[projector] = l
	return l, nil
}

// Turn implements runner.Coordinator: it fires whenever a lock is released or lost.
func (n *Node) Turn() <-chan struct{} {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	return n.m.turn
}

type memLease struct {
	m    *Memory
	name string
	node string
	once sync.Once
	done chan struct{}
	err  error
}

func (l *memLease) Done() <-chan struct{} { return l.done }

func (l *memLease) Err() error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	return l.err
}

func (l *memLease) end(err error) {
	l.once.Do(func() {
		l.m.mu.Lock()
		l.err = err
		l.m.broadcastTurn()
		l.m.mu.Unlock()
		close(l.done)
	})
}

func (l *memLease) Release(ctx context.Context) error {
	l.m.mu.Lock()
	if cur, ok := l.m.locks[l.name]; ok && cur == l {
		delete(l.m.locks, l.name)
	}
	l.m.mu.Unlock()
	l.end(fmt.Errorf("released"))
	return nil
}
