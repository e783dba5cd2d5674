package coord

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/store"
)

// ReleaseChannel is the NOTIFY channel on which a released projector's name
// is announced, so standbys retry at once.
const ReleaseChannel = "projectord_release"

// LeaveChannel is the NOTIFY channel on which a replica that begins a
// graceful stop announces its node id, before it releases anything, so the
// others count it gone at once and spread its projectors as it releases
// them, instead of at their next heartbeat.
const LeaveChannel = "projectord_leave"

// View is what one heartbeat read: the live nodes and who holds each lock
// of the namespace (Observer).
type View struct {
	// Self and SelfPID are this replica and its coordination backend.
	Self    string
	SelfPID int32
	// Members are the other live nodes (store.HeartbeatView), by node id.
	Members []store.NodeSession
	// Holders are the sessions holding each lock of the namespace.
	Holders []store.LockSession
}

// Observer receives, on the session goroutine, what the session learns
// about the other replicas. Its methods must not block.
type Observer interface {
	// View is called after every successful heartbeat, the first one right
	// after the session comes up and before standbys get their first
	// turn. It reports whether standbys should try again at once.
	View(View) (wake bool)
	// Released is called when another session announces (ReleaseChannel)
	// that it released projector's lock.
	Released(projector string)
	// Leaving is called when node, whose coordination backend is pid,
	// announces its stop (LeaveChannel). It reports whether standbys
	// should try again at once.
	Leaving(node string, pid uint32) (wake bool)
	// Lost is called when the session goes down: the last view is void.
	Lost()
}

// Config configures a coordination session.
type Config struct {
	// ConnConfig is the parsed coordination DSN. It is copied; the session
	// adds its own dialer, keepalive and timeout settings.
	ConnConfig *pgx.ConnConfig
	// Namespace is the first key of every advisory lock.
	Namespace int32
	// NodeID, Hostname and Version describe this replica in projectord.nodes.
	NodeID, Hostname, Version string
	// HeartbeatInterval is how often held locks are verified.
	HeartbeatInterval time.Duration
	// AcquireInterval is how often standbys get a turn to try for leadership.
	AcquireInterval time.Duration
	// LeaseTimeout bounds how long leases survive without a good heartbeat:
	// after LeaseTimeout/2 without one, every lease is dropped, well before
	// another replica may declare this one stalled.
	LeaseTimeout time.Duration
	// TCPUserTimeout, Keepalive* tune the socket on both ends.
	TCPUserTimeout    time.Duration
	KeepaliveIdle     time.Duration
	KeepaliveInterval time.Duration
	KeepaliveCount    int
	// Listen names extra channels to LISTEN on; OnNotify receives their
	// notifications on the session goroutine and must not block.
	Listen   []string
	OnNotify func(channel, payload string)
	// OnSessionLost is called once for every session that was up and ended
	// for any cause but Stop, with one of LossReasons (metrics). It runs on
	// the session goroutine, after every lease on the session has ended,
	// and must not block.
	OnSessionLost func(reason string)
	// NodeExpiry is how long the row of a node whose coordination backend
	// is gone stays in projectord.nodes after its last heartbeat; 0 keeps
	// such rows for ever. See expireNodes.
	NodeExpiry time.Duration
	// PoolBackends, if set, is the registry of this replica's pool
	// connections, recorded in the node row so that takeover reaches them.
	PoolBackends *PoolBackends
	// Observer, if set, receives every heartbeat's view and the other
	// replicas' release and leave announcements.
	Observer Observer
	Logger   *zap.Logger
}

type requestKind int

const (
	reqAcquire requestKind = iota
	reqRelease
	reqLeave
)

type result struct {
	lease *Lease
	err   error
}

type request struct {
	kind      requestKind
	name      string
	id        int32
	lease     *Lease
	reply     chan result // buffered 1
	abandoned bool        // guarded by Session.mu
}

// Session is one replica's coordination connection. Start it, then call
// TryAcquire from any goroutine.
type Session struct {
	cfg Config
	log *zap.Logger

	mu      sync.Mutex
	queue   []*request
	wake    context.CancelFunc // interrupts the current wait, if any
	held    map[int32]*Lease
	turn    chan struct{}
	up      bool
	pid     uint32
	lastHB  time.Time // last successful heartbeat (or connect)
	lastErr error

	leaving bool // Leave was called

	lastTakeOverCheck time.Time // session goroutine only
	expireNext        time.Time // session goroutine only: next expireNodes
	// After PostgreSQL's lock table ran full, acquisitions pause until
	// acquireResume, for a pause that doubles while it stays full (session
	// goroutine only): retrying at once would keep it full for everyone.
	acquirePause  time.Duration
	acquireResume time.Time

	cancel    context.CancelCauseFunc
	stopped   <-chan struct{} // closed by Stop; for tests
	done      chan struct{}
	startOnce sync.Once
	stopOnce  sync.Once
}

// New returns an unstarted session.
func New(cfg Config) *Session {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Session{cfg: cfg, log: log, held: map[int32]*Lease{}, turn: make(chan struct{}), done: make(chan struct{})}
	cfg.PoolBackends.attach(s)
	return s
}

// flushBackends asks the session to record new pool registrations now. It
// reports false while the session is down.
func (s *Session) flushBackends() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.up {
		return false
	}
	if s.wake != nil {
		s.wake()
	}
	return true
}

// Start begins connecting in the background and returns at once.
func (s *Session) Start(ctx context.Context) error {
	s.startOnce.Do(func() {
		ctx, s.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
		s.stopped = ctx.Done()
		go s.run(ctx)
	})
	return nil
}

// Stop releases every lock (notifying standbys), removes this node's row
// and closes the connection. It blocks until done and is safe to call twice.
func (s *Session) Stop() {
	s.stopOnce.Do(func() {
		if s.cancel == nil {
			close(s.done)
			return
		}
		s.cancel(ErrStopped)
	})
	<-s.done
}

// Up reports whether the session is connected and heartbeating.
func (s *Session) Up() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up
}

// Fresh reports whether the session is up and its last successful
// heartbeat is recent enough (lease_timeout/2) that no other replica can
// have declared this one stalled. A leader that is not fresh must not
// claim leadership to anyone, including metrics.
func (s *Session) Fresh() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up && time.Since(s.lastHB) < s.cfg.LeaseTimeout/2
}

// PID is the coordination backend's pid, 0 while down.
func (s *Session) PID() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pid
}

// Turn returns a channel closed at this replica's next acquire tick or when
// another replica releases a lock: the moment standbys should try again.
func (s *Session) Turn() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.turn
}

func (s *Session) broadcastTurn() {
	s.mu.Lock()
	close(s.turn)
	s.turn = make(chan struct{})
	s.mu.Unlock()
}

// Nudge gives standbys a turn now: what they may try for changed.
func (s *Session) Nudge() { s.broadcastTurn() }

// Leave announces on LeaveChannel, once, that this replica begins a
// graceful stop. It does not wait: the announcement is queued ahead of
// the releases that follow it, and a session that is down announces
// nothing (the others see the node gone at their next heartbeat anyway).
func (s *Session) Leave() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaving || !s.up {
		return
	}
	s.leaving = true
	s.queue = append(s.queue, &request{kind: reqLeave, reply: make(chan result, 1)})
	if s.wake != nil {
		s.wake()
	}
}

// TryAcquire tries once to take the lock of projector name (lock id id). It
// never waits for the lock: it returns ErrNotLeader when another session
// holds it and ErrUnavailable while the session is down.
func (s *Session) TryAcquire(ctx context.Context, name string, id int32) (*Lease, error) {
	// Never wait longer than the session itself may take to answer.
	ctx, cancel := context.WithTimeout(ctx, 2*s.opTimeout()+coalesceWindow)
	defer cancel()
	r := &request{kind: reqAcquire, name: name, id: id, reply: make(chan result, 1)}
	if err := s.enqueue(r); err != nil {
		return nil, err
	}
	select {
	case res := <-r.reply:
		return res.lease, res.err
	case <-ctx.Done():
		s.mu.Lock()
		r.abandoned = true
		var late *Lease
		select {
		case res := <-r.reply:
			late = res.lease
		default:
		}
		s.mu.Unlock()
		if late != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opTimeout())
			_ = late.Release(rctx)
			cancel()
		}
		return nil, ctx.Err()
	}
}

func (s *Session) release(ctx context.Context, l *Lease) error {
	r := &request{kind: reqRelease, lease: l, name: l.name, id: l.id, reply: make(chan result, 1)}
	if err := s.enqueue(r); err != nil {
		return nil // session down: the lock went with it
	}
	select {
	case res := <-r.reply:
		return res.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Session) enqueue(r *request) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.up {
		return ErrUnavailable
	}
	s.queue = append(s.queue, r)
	if s.wake != nil {
		s.wake()
	}
	return nil
}

// opCtx bounds one query on the session. It is deliberately detached from
// Stop: pgx closes a connection whose query is cancelled mid-flight, and a
// closed connection can neither release nor NOTIFY nor remove the node row.
// Stop is observed between queries instead, so it waits at most one
// opTimeout for the query in flight to drain.
func (s *Session) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.opTimeout())
}

func (s *Session) opTimeout() time.Duration {
	t := s.cfg.LeaseTimeout / 3
	if t <= 0 || t > 5*time.Second {
		t = 5 * time.Second
	}
	return t
}

func (s *Session) run(ctx context.Context) {
	defer close(s.done)
	delay := 100 * time.Millisecond
	for {
		reason := "" // why a session that was up ended; "" if it never came up
		conn, err := s.connect(ctx)
		if err == nil {
			// The delay starts over only after a session that lasted: one
			// that fails right after connecting (a server out of memory or
			// locks) must not be retried ten times a second.
			up := time.Now()
			err = s.serve(ctx, conn)
			if time.Since(up) >= max(s.cfg.LeaseTimeout, time.Second) {
				delay = 100 * time.Millisecond
			}
			s.down(err)
			stopping := ctx.Err() != nil
			if !stopping {
				reason = lossReason(conn, err)
				if s.cfg.OnSessionLost != nil {
					s.cfg.OnSessionLost(reason)
				}
			}
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
		if ctx.Err() != nil {
			return
		}
		fields := []zap.Field{zap.Error(err), zap.Duration("retry_in", delay)}
		if reason != "" {
			fields = append(fields, zap.String("reason", reason))
		}
		s.log.Warn("coordination session down, reconnecting", fields...)
		if !sleep(ctx, jitter(delay)) {
			return
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// Keepalives returns the session's socket settings, for pool connections.
func (c Config) Keepalives() Keepalives {
	return Keepalives{Idle: c.KeepaliveIdle, Interval: c.KeepaliveInterval, Count: c.KeepaliveCount, UserTimeout: c.TCPUserTimeout}
}

func (s *Session) connect(ctx context.Context) (*pgx.Conn, error) {
	cc := s.cfg.ConnConfig.Copy()
	rp := cc.RuntimeParams
	if _, ok := rp["application_name"]; !ok {
		rp["application_name"] = "projectord-coord " + s.cfg.NodeID
	}
	for name, v := range s.cfg.Keepalives().params() {
		rp[name] = v
	}
	d := &net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: s.cfg.KeepaliveIdle, Interval: s.cfg.KeepaliveInterval, Count: s.cfg.KeepaliveCount},
		Control: func(network, _ string, c syscall.RawConn) error {
			if s.cfg.TCPUserTimeout <= 0 || (network != "tcp" && network != "tcp4" && network != "tcp6") {
				return nil
			}
			return setUserTimeout(c, s.cfg.TCPUserTimeout)
		},
	}
	if cc.ConnectTimeout > 0 {
		d.Timeout = cc.ConnectTimeout
	}
	cc.DialFunc = d.DialContext

	ctx, cancel := context.WithTimeout(ctx, s.opTimeout()*2)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("error connecting coordination session: %w", err)
	}
	if err := s.setup(conn); err != nil {
		_ = conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// setup runs on its own deadline, not on the stop signal (see opCtx): a
// stop arriving now is seen by serve, which then removes the node row.
func (s *Session) setup(conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*s.opTimeout())
	defer cancel()
	var pid uint32
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return fmt.Errorf("error setting up coordination session: %w", err)
	}
	// A pooler hands out its own backend key data; a lock taken through a
	// transaction pooler silently excludes nobody (docs/architecture.md, rule 3).
	if pid != conn.PgConn().PID() {
		return fmt.Errorf("coordination session is not a direct PostgreSQL session (backend pid %d, protocol pid %d): point coordination.url at PostgreSQL, not at a connection pooler", pid, conn.PgConn().PID())
	}
	for _, ch := range append([]string{ReleaseChannel, LeaveChannel}, s.cfg.Listen...) {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			return fmt.Errorf("error listening on %s: %w", ch, err)
		}
	}
	// Every pool connection registered so far is recorded before the
	// session is up, so before any lease.
	gen, row := s.nodeRow()
	if err := store.RegisterNode(ctx, conn, row); err != nil {
		return err
	}
	s.cfg.PoolBackends.recorded(gen)
	return nil
}

// nodeRow is this replica's node row now, and the PoolBackends generation
// it records.
func (s *Session) nodeRow() (uint64, store.NodeRow) {
	gen, pids, starts := s.cfg.PoolBackends.snapshot()
	return gen, store.NodeRow{NodeID: s.cfg.NodeID, Hostname: s.cfg.Hostname, Version: s.cfg.Version, PoolPIDs: pids, PoolStarts: starts}
}

// serve runs the connected session until ctx ends or the connection fails.
func (s *Session) serve(ctx context.Context, conn *pgx.Conn) error {
	// Queries are not cut short by Stop (see opCtx), but one that fails
	// while stopping still ends in a stop: release what can be released
	// and say so.
	fail := func(err error) error {
		if ctx.Err() != nil {
			s.shutdown(conn)
			return context.Cause(ctx)
		}
		return err
	}
	now := time.Now()
	lastHB := now
	s.mu.Lock()
	s.up = true
	s.pid = conn.PgConn().PID()
	s.lastHB = now
	s.mu.Unlock()
	s.log.Info("coordination session up", zap.Uint32("backend_pid", conn.PgConn().PID()))

	hbNext := now.Add(s.cfg.HeartbeatInterval)
	turnNext := now.Add(jitter(s.cfg.AcquireInterval))
	beat := func() error {
		if err := s.heartbeat(conn); err != nil {
			return fail(err)
		}
		lastHB = time.Now()
		s.mu.Lock()
		s.lastHB = lastHB
		s.mu.Unlock()
		hbNext = lastHB.Add(s.cfg.HeartbeatInterval)
		// Dead nodes' rows are expired on the heartbeat's cadence, soon
		// after the first session comes up and then once a minute.
		if s.cfg.NodeExpiry > 0 && !lastHB.Before(s.expireNext) {
			s.expireNext = lastHB.Add(expireEvery)
			if err := s.expireNodes(conn); err != nil {
				return fail(err)
			}
		}
		return nil
	}
	// The first view before the first turn: a balancing replica that came
	// up must know who else runs before it tries for anything.
	if s.cfg.Observer != nil {
		if err := beat(); err != nil {
			return err
		}
	}
	s.broadcastTurn()
	for {
		if ctx.Err() != nil {
			s.shutdown(conn)
			return context.Cause(ctx)
		}
		// A process frozen (SIGSTOP, GC, VM pause) past half the lease must
		// assume a standby is about to take over.
		if stale := time.Since(lastHB); stale > s.cfg.LeaseTimeout/2 {
			return &sessionLost{reason: LostStalled,
				err: fmt.Errorf("no successful heartbeat for %s (lease_timeout %s)", stale.Round(time.Millisecond), s.cfg.LeaseTimeout)}
		}
		if s.pendingAcquire() {
			// Standbys wake together at a turn; give the rest of them a
			// moment to queue, so one query serves them all and idle load
			// does not grow with the number of projectors.
			t := time.NewTimer(coalesceWindow)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				continue // stopping: release, do not acquire
			}
		}
		// A new pool connection waits to be recorded in the node row, and
		// nothing is acquired while one is missing from it.
		if s.cfg.PoolBackends.dirty() {
			if err := beat(); err != nil {
				return err
			}
		}
		if reqs := s.take(); len(reqs) > 0 {
			if err := s.handle(conn, reqs); err != nil {
				return fail(lost(conn, LostQuery, err))
			}
		}
		now = time.Now()
		if !now.Before(hbNext) {
			if err := beat(); err != nil {
				return err
			}
		}
		if !now.Before(turnNext) {
			s.broadcastTurn()
			turnNext = now.Add(jitter(s.cfg.AcquireInterval))
		}

		waitCtx, cancel := context.WithDeadline(ctx, minTime(hbNext, turnNext))
		s.mu.Lock()
		if len(s.queue) > 0 || s.cfg.PoolBackends.dirty() {
			s.mu.Unlock()
			cancel()
			continue
		}
		s.wake = cancel
		s.mu.Unlock()
		n, err := conn.WaitForNotification(waitCtx)
		s.mu.Lock()
		s.wake = nil
		s.mu.Unlock()
		cancel()
		switch {
		case err == nil:
			switch {
			case n.Channel == ReleaseChannel:
				if o := s.cfg.Observer; o != nil && n.PID != conn.PgConn().PID() {
					o.Released(n.Payload)
				}
				s.broadcastTurn()
			case n.Channel == LeaveChannel:
				if o := s.cfg.Observer; o != nil && n.PID != conn.PgConn().PID() && o.Leaving(n.Payload, n.PID) {
					s.broadcastTurn()
				}
			case s.cfg.OnNotify != nil:
				s.cfg.OnNotify(n.Channel, n.Payload)
			}
		case conn.IsClosed() || waitCtx.Err() == nil:
			return fail(&sessionLost{reason: LostConnection, err: fmt.Errorf("coordination connection failed: %w", err)})
		}
	}
}

// coalesceWindow is how long acquire attempts are gathered into one query.
const coalesceWindow = 3 * time.Millisecond

func (s *Session) pendingAcquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.queue {
		if r.kind == reqAcquire {
			return true
		}
	}
	return false
}

func (s *Session) take() []*request {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// handle serves queued requests: all releases in one statement, then all
// acquire attempts in another.
func (s *Session) handle(conn *pgx.Conn, reqs []*request) error {
	var rel, acq []*request
	for _, r := range reqs {
		switch r.kind {
		case reqLeave:
			// Before the releases it was queued ahead of. It is a hint: a
			// failure only costs the others a heartbeat's wait, and a
			// connection that failed with it fails the statements below,
			// which answer every request taken.
			if err := s.announceLeave(conn); err != nil {
				s.log.Warn("error announcing this node's stop; the others see it gone at their next heartbeat", zap.Error(err))
			}
		case reqRelease:
			rel = append(rel, r)
		default:
			acq = append(acq, r)
		}
	}
	if len(rel) > 0 {
		if err := s.unlock(conn, rel); err != nil {
			// take() removed them from the queue: answer them here, or
			// their callers would wait for ever.
			s.failAll(acq, err)
			return err
		}
	}
	if len(acq) == 0 {
		return nil
	}
	ids := make([]int32, 0, len(acq))
	for _, r := range acq {
		s.mu.Lock()
		_, held := s.held[r.id]
		s.mu.Unlock()
		if held {
			r.reply <- result{err: fmt.Errorf("projector %s: lease already held by this replica", r.name)}
			continue
		}
		ids = append(ids, r.id)
	}
	if len(ids) == 0 {
		return nil
	}
	if time.Now().Before(s.acquireResume) {
		s.failAll(acq, errLockTablePaused)
		return nil
	}
	qctx, cancel := s.opCtx()
	defer cancel()
	rows, err := conn.Query(qctx, `SELECT k, pg_try_advisory_lock($1, k) FROM unnest($2::int4[]) AS k`, s.cfg.Namespace, ids)
	if err != nil {
		s.failAll(acq, err)
		if s.lockTableFull(conn, ids, err) {
			return nil
		}
		return fmt.Errorf("error acquiring locks: %w", err)
	}
	got := map[int32]bool{}
	for rows.Next() {
		var id int32
		var ok bool
		if err := rows.Scan(&id, &ok); err != nil {
			rows.Close()
			s.failAll(acq, err)
			return err
		}
		got[id] = ok
	}
	if err := rows.Err(); err != nil {
		s.failAll(acq, err)
		if s.lockTableFull(conn, ids, err) {
			return nil
		}
		return fmt.Errorf("error acquiring locks: %w", err)
	}
	s.acquirePause = 0
	var orphans []*request
	var refused []int32
	s.mu.Lock()
	for _, r := range acq {
		ok, asked := got[r.id]
		if !asked {
			continue // answered above
		}
		if !ok {
			refused = append(refused, r.id)
			r.reply <- result{err: ErrNotLeader}
			continue
		}
		l := newLease(s, r.name, r.id)
		s.held[r.id] = l
		if r.abandoned {
			orphans = append(orphans, &request{kind: reqRelease, lease: l, name: r.name, id: r.id, reply: make(chan result, 1)})
			continue
		}
		r.reply <- result{lease: l}
	}
	s.mu.Unlock()
	if len(orphans) > 0 {
		if err := s.unlock(conn, orphans); err != nil {
			return err
		}
	}
	// Looking for stalled holders once per heartbeat interval is enough:
	// they are only declared stalled after lease_timeout.
	if len(refused) > 0 && time.Since(s.lastTakeOverCheck) >= s.cfg.HeartbeatInterval {
		s.lastTakeOverCheck = time.Now()
		return s.takeOver(conn, refused)
	}
	return nil
}

// errLockTablePaused answers acquisitions while they pause after
// PostgreSQL ran out of lock table space.
var errLockTablePaused = errors.New("acquisitions paused: PostgreSQL's lock table was full (out of shared memory)")

// lockTableFull handles an acquisition that failed because PostgreSQL's
// shared lock table is full (53200 out of shared memory), which fails
// every client of the cluster: the session stays up and keeps its leases,
// but acquires nothing more for a while (1s, doubling to 1m while it
// stays full). Session locks the statement took before it failed outlive
// it, so they are released first. It reports false for any other error,
// or when that release fails: then the session must reconnect.
func (s *Session) lockTableFull(conn *pgx.Conn, ids []int32, err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "53200" || conn.IsClosed() {
		return false
	}
	qctx, cancel := context.WithTimeout(context.Background(), s.opTimeout())
	defer cancel()
	if _, err := conn.Exec(qctx, `SELECT pg_advisory_unlock($1, k) FROM unnest($2::int4[]) AS k`, s.cfg.Namespace, ids); err != nil {
		return false
	}
	s.acquirePause = min(max(2*s.acquirePause, time.Second), time.Minute)
	d := jitter(s.acquirePause)
	s.acquireResume = time.Now().Add(d)
	s.log.Warn("PostgreSQL's lock table is full; acquiring no more projectors for a while (raise max_locks_per_transaction, or run fewer projectors)",
		zap.Int("wanted", len(ids)), zap.Duration("retry_in", d), zap.Error(err))
	return true
}

func (s *Session) failAll(reqs []*request, err error) {
	for _, r := range reqs {
		select {
		case r.reply <- result{err: fmt.Errorf("%w: %v", ErrUnavailable, err)}:
		default:
		}
	}
}

// takeOver terminates the sessions of nodes that hold one of the refused
// locks but have not heartbeated for lease_timeout: a frozen or cut-off
// leader. Its coordination backend dies and its lock with it; its pool
// connections (those on this cluster, registered in its node row whatever
// their application_name) die too, so no transaction of it stays open
// holding an xid or row locks; fencing rejects anything it still tries to
// commit. Terminating needs superuser or membership in pg_signal_backend;
// without it the stalled leader keeps its lock until PostgreSQL drops its
// connection.
func (s *Session) takeOver(conn *pgx.Conn, ids []int32) error {
	qctx, cancel := s.opCtx()
	defer cancel()
	victims, err := store.TerminateStalled(qctx, conn, s.cfg.Namespace, toInt64s(ids), s.cfg.NodeID, s.cfg.LeaseTimeout)
	if err != nil {
		s.log.Warn("error taking over from a stalled leader (terminating needs superuser or pg_signal_backend)", zap.Error(err))
		if conn.IsClosed() {
			return err
		}
		return nil
	}
	terminated := 0
	for _, v := range victims {
		if v.Terminated {
			terminated++
		}
		s.log.Warn("terminated a session of a stalled leader", zap.String("stalled_node", v.Node),
			zap.Duration("silent_for", v.Silent), zap.Int32("pid", v.PID), zap.Bool("terminated", v.Terminated))
	}
	if terminated > 0 {
		// The locks go as the backends exit; try again at once.
		s.broadcastTurn()
	}
	return nil
}

func toInt64s(ids []int32) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

// unlock releases the requests' locks and announces each release.
func (s *Session) unlock(conn *pgx.Conn, rel []*request) error {
	ids := make([]int32, len(rel))
	names := make([]string, len(rel))
	for i, r := range rel {
		ids[i], names[i] = r.id, r.name
	}
	qctx, cancel := s.opCtx()
	defer cancel()
	_, err := conn.Exec(qctx, `SELECT pg_advisory_unlock($1, k), pg_notify($4, n)
		FROM unnest($2::int4[], $3::text[]) AS u(k, n)`, s.cfg.Namespace, ids, names, ReleaseChannel)
	s.mu.Lock()
	for _, r := range rel {
		if s.held[r.id] == r.lease {
			delete(s.held, r.id)
		}
	}
	s.mu.Unlock()
	for _, r := range rel {
		r.lease.end(ErrReleased)
		r.reply <- result{err: err}
	}
	if err != nil {
		return fmt.Errorf("error releasing locks: %w", err)
	}
	return nil
}

// announceLeave sends this node's id on LeaveChannel.
func (s *Session) announceLeave(conn *pgx.Conn) error {
	qctx, cancel := s.opCtx()
	defer cancel()
	if _, err := conn.Exec(qctx, `SELECT pg_notify($1, $2)`, LeaveChannel, s.cfg.NodeID); err != nil {
		return fmt.Errorf("error announcing this node's stop: %w", err)
	}
	return nil
}

// heartbeat refreshes this node's row and checks that every lease this
// session believes it holds is still granted to its backend. With an
// Observer, the same statement reads the view it is given.
func (s *Session) heartbeat(conn *pgx.Conn) error {
	qctx, cancel := s.opCtx()
	defer cancel()
	gen, row := s.nodeRow()
	var pid uint32
	var granted []int64
	var view *View
	var err error
	if s.cfg.Observer != nil {
		var h store.Heartbeat
		h, err = store.HeartbeatView(qctx, conn, s.cfg.Namespace, row, s.cfg.LeaseTimeout)
		pid, granted = h.PID, h.Granted
		view = &View{Self: s.cfg.NodeID, SelfPID: int32(h.PID), Members: h.Members, Holders: h.Holders}
	} else {
		pid, granted, err = store.HeartbeatNode(qctx, conn, s.cfg.Namespace, row)
	}
	if err != nil {
		return lost(conn, LostHeartbeat, fmt.Errorf("heartbeat failed: %w", err))
	}
	if pid != conn.PgConn().PID() {
		return &sessionLost{reason: LostPooler,
			err: fmt.Errorf("coordination backend changed from pid %d to %d: is a pooler in the way?", conn.PgConn().PID(), pid)}
	}
	s.cfg.PoolBackends.recorded(gen)
	have := make(map[int32]bool, len(granted))
	for _, g := range granted {
		have[int32(g)] = true
	}
	s.mu.Lock()
	var lost []*Lease
	for id, l := range s.held {
		if !have[id] {
			lost = append(lost, l)
			delete(s.held, id)
		}
	}
	s.mu.Unlock()
	for _, l := range lost {
		s.log.Error("advisory lock missing from pg_locks; dropping lease", zap.String("projector", l.name))
		l.end(ErrLockMissing)
	}
	if view != nil && s.cfg.Observer.View(*view) {
		s.broadcastTurn()
	}
	return nil
}

// expireEvery is how often a session looks for expired node rows.
const expireEvery = time.Minute

// expireNodes deletes the rows of other nodes that have not heartbeated for
// NodeExpiry and whose coordination backend is gone. A row whose backend
// still lives (same pid, started before the row's last heartbeat) is kept
// however old it is: takeOver finds a stalled node's sessions through it. A
// backend whose start this role may not see (pg_stat_activity hides it
// without pg_read_all_stats) counts as alive. A failure is only logged,
// unless it took the connection with it.
func (s *Session) expireNodes(conn *pgx.Conn) error {
	qctx, cancel := s.opCtx()
	defer cancel()
	nodes, err := store.ExpireNodes(qctx, conn, s.cfg.NodeID, s.cfg.NodeExpiry)
	if err != nil {
		if conn.IsClosed() {
			return lost(conn, LostQuery, fmt.Errorf("error expiring node rows: %w", err))
		}
		s.log.Warn("error expiring the rows of dead nodes", zap.Error(err))
		return nil
	}
	if len(nodes) > 0 {
		s.log.Info("removed the rows of dead nodes", zap.Int("rows", len(nodes)), zap.Strings("nodes", nodes),
			zap.Duration("node_expiry", s.cfg.NodeExpiry))
	}
	return nil
}

// Reasons a coordination session was lost, as given to Config.OnSessionLost
// (a metric's label values: the set is closed).
const (
	// LostConnection: the server or the network closed the connection (a
	// terminated backend, a PostgreSQL restart, a reset, keepalives or
	// tcp_user_timeout giving up), whatever the session was doing.
	LostConnection = "connection"
	// LostHeartbeat: the heartbeat query failed, or did not answer within
	// its deadline, without the server or network closing the connection.
	LostHeartbeat = "heartbeat"
	// LostQuery: likewise for another query of the session (acquire,
	// release, takeover, node expiry).
	LostQuery = "query"
	// LostStalled: no successful heartbeat for lease_timeout/2 (the process
	// was frozen or starved), so a standby may be taking over.
	LostStalled = "stalled"
	// LostPooler: the heartbeat answered from another backend than the
	// session's (a connection pooler is in the way).
	LostPooler = "pooler"
)

// LossReasons returns every reason OnSessionLost may be given.
func LossReasons() []string {
	return []string{LostConnection, LostHeartbeat, LostQuery, LostStalled, LostPooler}
}

// sessionLost is why serve ended, when it was not stopped.
type sessionLost struct {
	reason string
	err    error
}

func (e *sessionLost) Error() string { return e.err.Error() }
func (e *sessionLost) Unwrap() error { return e.err }

// lost wraps err, the failure of a query of the given kind (LostHeartbeat or
// LostQuery), with its reason. An error that already has one keeps it.
func lost(conn *pgx.Conn, kind string, err error) error {
	var sl *sessionLost
	if errors.As(err, &sl) {
		return err
	}
	return &sessionLost{reason: classify(conn, kind, err), err: err}
}

// classify tells a connection that the server or the network closed
// (LostConnection) from a query that failed or ran out of time on its own
// (kind). Running out of the query's own deadline is the query's failure,
// although pgx then closes the connection itself.
func classify(conn *pgx.Conn, kind string, err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return kind
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		sev := pgErr.SeverityUnlocalized
		if sev == "" {
			sev = pgErr.Severity
		}
		// Class 08 is a connection exception, 57P an operator or crash
		// shutdown (pg_terminate_backend is 57P01); FATAL and PANIC end the
		// connection whatever their code.
		if strings.HasPrefix(pgErr.Code, "08") || strings.HasPrefix(pgErr.Code, "57P") || sev == "FATAL" || sev == "PANIC" {
			return LostConnection
		}
		return kind
	}
	if conn.IsClosed() {
		return LostConnection
	}
	return kind
}

// lossReason is the reason of a session that serve ended with err.
func lossReason(conn *pgx.Conn, err error) string {
	var sl *sessionLost
	if errors.As(err, &sl) {
		return sl.reason
	}
	return classify(conn, LostQuery, err)
}

// shutdown releases every held lock and removes the node row.
func (s *Session) shutdown(conn *pgx.Conn) {
	s.mu.Lock()
	rel := make([]*request, 0, len(s.held))
	for id, l := range s.held {
		rel = append(rel, &request{kind: reqRelease, lease: l, name: l.name, id: id, reply: make(chan result, 1)})
	}
	s.mu.Unlock()
	if len(rel) > 0 {
		if err := s.unlock(conn, rel); err != nil {
			s.log.Warn("error releasing locks on stop", zap.Error(err))
		}
	}
	qctx, cancel := s.opCtx()
	defer cancel()
	if err := store.RemoveNode(qctx, conn, s.cfg.NodeID); err != nil {
		s.log.Warn("error removing node row on stop", zap.Error(err))
	}
}

// down marks the session down and ends every lease on it at once.
func (s *Session) down(cause error) {
	s.mu.Lock()
	s.up = false
	s.pid = 0
	s.lastErr = cause
	held := s.held
	s.held = map[int32]*Lease{}
	queued := s.queue
	s.queue = nil
	s.mu.Unlock()
	err := ErrSessionLost
	if errors.Is(cause, ErrStopped) {
		err = ErrStopped
	}
	for _, l := range held {
		l.end(fmt.Errorf("%w: %v", err, cause))
	}
	if s.cfg.Observer != nil {
		s.cfg.Observer.Lost()
	}
	s.failAll(queued, cause)
	// Registrations waiting for the node row need not wait: no lease is
	// held now, and the next connect records the whole set.
	s.cfg.PoolBackends.kick()
	if len(held) > 0 && !errors.Is(cause, ErrStopped) {
		s.log.Warn("coordination session lost; all leases dropped", zap.Int("leases", len(held)), zap.Error(cause))
	}
}

func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// sleep waits for d or ctx; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
