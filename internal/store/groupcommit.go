package store

// Group commit: the batches that several projectors commit into one target
// database at about the same time share one transaction. At the live tail
// every head change gives nearly every projector a small batch, and one
// transaction each costs the database a commit (and a WAL flush) per
// projector per poll; a group costs one.
//
// A group never lets one member's failure decide another's outcome. The
// group's transaction is one pipelined batch, and a pipeline stops at its
// first error, so the error names exactly one member when it is raised by
// one of that member's statements (a handler), or by the group's fenced
// checkpoint moves (projectord.advance_group, which names the member it
// refuses): that member commits alone, on its own context, and what it gets
// is what a solo commit gives; the others run again at once as a group
// without it. Each such failure removes one member, so this ends. A
// failure nobody can be blamed for (BEGIN, COMMIT, a deferred constraint,
// the connection, the group's deadline) sends every member to commit
// alone. A member learns its outcome only once its batch has either
// committed or certainly not, so a batch that went through is never
// reported failed (its leader would retry it, meet its own rows or its
// own checkpoint move, and poison the event or step down as if deposed).
// COMMIT goes out with the rest of the pipeline, so when the client stops
// reading (the group's deadline, a lost connection), PostgreSQL may still
// commit: the group then asks the server what became of its transaction
// (learnOutcome) before it answers anyone.
//
// A large group is committed in parts, side by side (commitParts): each
// part is a group in every respect above, with its own transaction,
// deadline and culprit.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projectord/projectord/internal/testsignal"
)

// A group holds at most this many batches, and no more events than
// groupMaxEvents unless its first batch alone has more: past that, one
// transaction's locks, WAL and time would grow with the number of
// projectors instead of saving a commit per batch.
const (
	groupMaxMembers = 256
	groupMaxEvents  = 10_000
)

// errGoSolo tells a member that nothing of its batch was committed and
// that it must commit the batch alone.
var errGoSolo = errors.New("store: commit the batch in a transaction of its own")

// errOutcomeUnknown is what a member gets when its group's transaction
// may have committed and the server could not be asked whether it did:
// as for a batch alone whose COMMIT went unanswered, the loop classifies
// the cause (wrapped with it) and retries from its checkpoint.
var errOutcomeUnknown = errors.New("the outcome of the group's transaction is unknown")

// errRolledBackAtCommit is PostgreSQL answering the group's COMMIT with
// ROLLBACK: its transaction had failed.
var errRolledBackAtCommit = errors.New("the group's transaction was rolled back at COMMIT")

// EnableGroupCommit lets t commit the batches of several projectors in one
// transaction (Commit). Call it before the first Commit; without it every
// batch has its own transaction.
func (t *Target) EnableGroupCommit() {
	t.groups = &groupQueue{}
}

// ObserveCommits makes t call f after every transaction it commits for
// batches: grouped (one transaction for that many batches of several
// projectors: a group, or a part of one) or alone (batches is 1). f must
// not block, and may be called by several goroutines at once: it runs on
// the commit's goroutine, on the committer's, or on a part's. Call it
// before the first Commit.
func (t *Target) ObserveCommits(f func(grouped bool, batches int)) {
	t.onCommit = f
}

func (t *Target) committed(grouped bool, batches int) {
	if t.onCommit != nil {
		t.onCommit(grouped, batches)
	}
}

// groupMember is one queued batch and the way back to its caller.
type groupMember struct {
	ctx  context.Context
	req  CommitRequest
	sink *SQLSink
	// result receives exactly one value: nil (committed in a group),
	// errGoSolo, or the outcome of the commit the committer made for it
	// alone. Buffered, so the committer never waits for a member.
	result chan error
}

// groupQueue is a target's queue of batches waiting for a group, and the
// state of its committer: at most one goroutine, running while the queue
// is not empty.
type groupQueue struct {
	mu      sync.Mutex
	queue   []*groupMember
	running bool

	// For tests (export_test.go): queued is signalled the queue's length
	// after every batch added; a non-nil hold makes the committer wait
	// for it to close before it takes each group, so a test can fill the
	// queue first.
	queued testsignal.Log[int]
	hold   chan struct{}

	// last and before are how many batches the committer took last time
	// and the time before (gather).
	last, before int
	// partsOffUntil is when groups may be committed in parts again after
	// a deadlock (noteDeadlock); zero when they may.
	partsOffUntil time.Time
}

// gatherRounds bounds how many times gather lets the runnable goroutines
// go first.
const gatherRounds = 16

// gather gives a batch that found the queue empty but for itself a chance
// of company, when the group before had some: at the live tail a head
// change wakes every projector at once, the first batch reaches the queue
// a little ahead of the others, and committing it alone costs a
// transaction (two round trips, each an idle gap and a wake-up of the
// replica) per head change. The committer lets the goroutines ready to
// run go first (runtime.Gosched: no timer, no wait for anything that is
// not already running), as long as the queue grows, and then puts the
// batch back at the front of the queue to be taken with whatever came.
// It reports whether anything came; if nothing did, the batch stays the
// committer's, alone. A batch that was alone the time before too (one
// busy projector on this target) does not wait at all.
func (g *groupQueue) gather(m *groupMember) bool {
	g.mu.Lock()
	before := g.before
	g.mu.Unlock()
	if before <= 1 {
		return false
	}
	n := 0
	for range gatherRounds {
		runtime.Gosched()
		g.mu.Lock()
		l := len(g.queue)
		g.mu.Unlock()
		if l == n && l > 0 {
			break
		}
		n = l
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		return false
	}
	g.queue = append([]*groupMember{m}, g.queue...)
	return true
}

// commitGrouped queues req for the next group and waits for its outcome.
func (t *Target) commitGrouped(ctx context.Context, req CommitRequest, sink *SQLSink) error {
	m := &groupMember{ctx: ctx, req: req, sink: sink, result: make(chan error, 1)}
	t.groups.add(t, m)
	// Not given up when ctx ends: until the answer comes, the batch may
	// still commit in its group. The wait is bounded all the same: by the
	// group running when it was queued (its deadline and the learning of
	// its outcome, or the context of the batch the committer commits
	// alone), then by its own group's, which end no later than its own
	// deadline (groupContext).
	err := <-m.result
	if errors.Is(err, errGoSolo) {
		return t.commitOne(ctx, req, sink)
	}
	return err
}

func (g *groupQueue) add(t *Target, m *groupMember) {
	g.mu.Lock()
	g.queue = append(g.queue, m)
	n := len(g.queue)
	start := !g.running
	g.running = true
	g.mu.Unlock()
	g.queued.Signal(n)
	if start {
		go t.runGroups()
	}
}

// runGroups is the committer: it commits groups until the queue is empty.
// Its lifetime is bounded by the work queued: each group by its deadline,
// and every queued batch has a caller waiting for it.
func (t *Target) runGroups() {
	for {
		if t.groups.hold != nil {
			<-t.groups.hold
		}
		members, ok := t.groups.take()
		if !ok {
			return
		}
		switch len(members) {
		case 0:
		case 1:
			if t.groups.gather(members[0]) {
				continue
			}
			// Alone, a batch gains nothing from a group and would lose
			// half its time (groupContext): it is committed as without
			// grouping, on its own context. By the committer, though, so
			// that the batches queued meanwhile wait and form the next
			// group: were the committer free again at once, batches
			// arriving one after the other would each find the queue
			// empty but for themselves, and never share a transaction.
			m := members[0]
			m.result <- t.commitOne(m.ctx, m.req, m.sink)
		default:
			t.commitParts(members)
		}
	}
}

// A group of at least twice groupPartMin batches is committed in parts,
// side by side, each its own transaction on its own connection: one
// transaction's statements run one after the other on one backend, so a
// group of a hundred projectors' batches keeps its last members waiting
// for all the others', while the server has cores to spare. A part of
// fewer batches would save too little time to pay for its own BEGIN and
// COMMIT.
const groupPartMin = 16

// partsOffAfterDeadlock is how long a target commits every group whole
// after one of its groups met a deadlock. Parts are concurrent
// transactions: batches whose handlers write the same rows, which wait
// for each other in turn inside one transaction, can lock them in
// opposite orders in two parts. PostgreSQL breaks such a deadlock after
// deadlock_timeout (a second by default) by failing one part, whose
// batch then commits alone and the rest again: nothing is applied twice,
// but handlers that do this at every head change would cost that second
// every time, so parts are left off for a while instead.
const partsOffAfterDeadlock = 10 * time.Minute

// groupParts is how many parts a group of n batches is committed in: one
// per groupPartMin batches, and at most a quarter of the pool's
// connections (but two from a pool of three or more), so that parts leave
// a connection for the reads and the batches committed alone; one while
// parts are off after a deadlock.
func (t *Target) groupParts(n int) int {
	if n < 2*groupPartMin || t.groups.partsOff() {
		return 1
	}
	conns := int(t.pool.Stat().MaxConns())
	most := conns / 4
	if most < 2 {
		most = min(2, conns-1)
	}
	return max(1, min(n/groupPartMin, most))
}

func (g *groupQueue) partsOff() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.partsOffUntil.IsZero() && time.Now().Before(g.partsOffUntil)
}

// noteDeadlock turns parts off for partsOffAfterDeadlock when err, a
// group's failure, is a deadlock PostgreSQL broke (40P01), or, in a part
// of a take committed in parts, a lock wait the group's lock_timeout cut
// short (55P03): a group's lock_timeout is a quarter of its members'
// time, so with a short database.query_timeout (or a long
// deadlock_timeout) the same deadlock between parts ends that way, before
// PostgreSQL looks for it.
func (g *groupQueue) noteDeadlock(err error, inParts bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !(pgErr.Code == "40P01" || (inParts && pgErr.Code == "55P03")) {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.partsOffUntil = time.Now().Add(partsOffAfterDeadlock)
}

// commitParts commits members, a group taken from the queue, in
// groupParts parts of as many batches each (give or take one), and
// returns once every part has its outcome. The parts are independent
// groups: each member's outcome is that of its own part's transaction,
// and a member a part blames goes alone while the rest of its part is
// queued again (at the front), as for any group. A batch cannot be in two
// parts: a projector has at most one batch in a take, and a take's
// members are split, not copied. The parts are cut by batches, not by
// statements: a part is a group, which a lone large batch must not be (it
// would lose half its time to groupContext).
func (t *Target) commitParts(members []*groupMember) {
	parts := t.groupParts(len(members))
	split := parts > 1
	var wg sync.WaitGroup
	for ; parts > 1; parts-- {
		size := len(members) / parts
		part := members[:size:size]
		members = members[size:]
		wg.Go(func() { t.commitGroup(part, true) })
	}
	t.commitGroup(members, split)
	wg.Wait()
}

// take removes the next group from the queue, in queue order: up to
// groupMaxMembers batches and groupMaxEvents events, at most one batch per
// projector (a second one would find the first's checkpoint move in the
// same transaction, and would have to be blamed when the first fails: it
// waits for the next group). A batch whose context has ended, or whose
// deadline has passed, is sent to commit alone, which fails at once. ok
// is false, and the committer ends, when the queue is empty.
func (g *groupQueue) take() (members []*groupMember, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) == 0 {
		g.running = false
		g.queue = nil // let a burst's backing array go
		return nil, false
	}
	projectors := map[string]bool{}
	events := 0
	rest := g.queue[:0]
	for i, m := range g.queue {
		if len(members) == groupMaxMembers || (len(members) > 0 && events+len(m.req.Events) > groupMaxEvents) {
			rest = append(rest, g.queue[i:]...)
			break
		}
		switch {
		case projectors[m.req.Projector]:
			rest = append(rest, m)
		case m.ctx.Err() != nil || m.req.Expired():
			m.result <- errGoSolo
		default:
			projectors[m.req.Projector] = true
			events += len(m.req.Events)
			members = append(members, m)
		}
	}
	clear(g.queue[len(rest):])
	g.queue = rest
	g.before, g.last = g.last, len(members)
	return members, true
}

// requeue puts members back at the front of the queue, in their order.
func (g *groupQueue) requeue(members []*groupMember) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.queue = append(slices.Clip(members), g.queue...)
}

// commitGroup commits members in one transaction, or finds who must
// commit alone. inParts: members are one part of a take committed in
// parts.
func (t *Target) commitGroup(members []*groupMember, inParts bool) {
	culprit, err := t.runGroup(members)
	switch {
	case err == nil:
		t.committed(true, len(members))
		for _, m := range members {
			m.result <- nil
		}
	case errors.Is(err, errOutcomeUnknown):
		for _, m := range members {
			m.result <- fmt.Errorf("error committing the batch of %s in a group: %w", m.req.Projector, err)
		}
	case culprit >= 0:
		t.groups.noteDeadlock(err, inParts)
		members[culprit].result <- errGoSolo
		t.groups.requeue(slices.Delete(members, culprit, culprit+1))
	default:
		t.groups.noteDeadlock(err, inParts)
		for _, m := range members {
			m.result <- errGoSolo
		}
	}
}

// runGroup runs members' batches in one transaction: each member's sink
// statements in turn, then every member's fenced checkpoint move in one
// statement, and COMMIT. It returns nil when the transaction committed.
// Otherwise the error either wraps errOutcomeUnknown, or the transaction
// certainly did not commit and culprit is the member whose statement
// PostgreSQL refused, or -1 when the failure is nobody's.
func (t *Target) runGroup(members []*groupMember) (culprit int, err error) {
	ctx, learnCtx, cancel := t.groupContext(members)
	defer cancel()
	b := &pgx.Batch{}
	// owner maps each queued sink statement to its member: the member's
	// own solo commit names the event, by its own batch's index, if it
	// fails.
	var owner, events []int
	moves := newGroupMoves(len(members))
	for k, m := range members {
		req := &m.req
		if m.sink != nil {
			events = m.sink.queue(b, req.Events, events[:0])
		}
		for len(owner) < b.Len() {
			owner = append(owner, k)
		}
		moves.add(req)
	}
	// Every member's fenced checkpoint move in one statement, after all
	// the sink statements: the transaction commits all of them or none, so
	// where in it a move runs changes nothing but the cost (one statement
	// instead of one per member).
	advance := b.Len()
	moves.queue(b)
	commit := b.Len()
	b.Queue("COMMIT")
	conn, err := t.pool.Acquire(ctx)
	if err != nil {
		return -1, err
	}
	defer conn.Release()
	pc := conn.Conn().PgConn()
	rollback := func() {
		// A failure leaves the transaction open: end it so the connection
		// can be reused; the pool discards one on which even this fails.
		if !pc.IsClosed() && pc.TxStatus() != 'I' {
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
	}
	// As in commitOne: BEGIN before the batch, so the statements pgx
	// prepares first, in a round trip of their own, run under the group's
	// limits too. The transaction's id, taken in the same round trip, is
	// how the server is asked later whether it committed; nothing that
	// could commit it has been sent yet if this fails.
	xid, err := begin(ctx, pc)
	if err != nil {
		rollback()
		return -1, err
	}
	br := conn.SendBatch(ctx, b)
	culprit, err = -1, nil
	for i := 0; i <= commit; i++ {
		tag, qerr := br.Exec()
		if qerr == nil && i == commit && tag.String() != "COMMIT" {
			// PostgreSQL answers a COMMIT of a failed transaction with
			// ROLLBACK and no error.
			qerr = errRolledBackAtCommit
		}
		if qerr != nil {
			err = qerr
			switch {
			case i < advance && blamable(qerr):
				culprit = owner[i]
			case i == advance:
				culprit = refusedMember(qerr, len(members))
			}
			break
		}
	}
	// Whatever Close says adds nothing: the outcome is known from the
	// results read.
	_ = br.Close()
	if err == nil {
		// COMMIT succeeded: the batches are in, whatever the connection
		// does next.
		return -1, nil
	}
	if pc.IsClosed() || ctx.Err() != nil {
		// The connection or the group's time ran out under whichever
		// statement was running: not that statement's doing.
		culprit = -1
	}
	rollback()
	if !abortedForSure(err) {
		// COMMIT was sent with the rest, and the client stopped reading
		// before PostgreSQL said what became of it: the server may have
		// committed meanwhile, or may still (a COMMIT waiting for a
		// synchronous standby is bounded by no statement_timeout, and
		// the cancel pgx sends as it gives up ends that wait with the
		// transaction committed). Telling the members to commit alone
		// would then have each meet its own rows or checkpoint move.
		// The connection goes back first (closed, the pool drops it), so
		// that asking needs no more connections than the group had.
		pid := pc.PID()
		conn.Release()
		committed, lerr := t.learnOutcome(learnCtx, xid, pid)
		switch {
		case lerr != nil:
			return -1, fmt.Errorf("%w (asking the server: %v): %w", errOutcomeUnknown, lerr, err)
		case committed:
			return -1, nil
		}
	}
	return culprit, err
}

// begin opens the group's transaction with its limits and returns the
// transaction's id.
func begin(ctx context.Context, pc *pgconn.PgConn) (uint64, error) {
	res, err := pc.Exec(ctx, beginSQL(ctx)+"; SELECT pg_current_xact_id()").ReadAll()
	if err != nil {
		return 0, err
	}
	if len(res) == 0 || len(res[len(res)-1].Rows) != 1 || len(res[len(res)-1].Rows[0]) != 1 {
		return 0, errors.New("error beginning the group's transaction: pg_current_xact_id() returned no row")
	}
	xid, err := strconv.ParseUint(string(res[len(res)-1].Rows[0][0]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("error beginning the group's transaction: pg_current_xact_id(): %w", err)
	}
	return xid, nil
}

// abortedForSure reports whether err, a group's failure after its
// pipeline was handed to pgx, leaves its transaction certainly not
// committed: PostgreSQL refused a statement with an ERROR (which aborts
// the transaction: the statements after it and the COMMIT are skipped),
// it answered COMMIT with ROLLBACK, or pgx failed before sending the
// statements. Our deadline, a lost connection or a FATAL error may come
// after PostgreSQL committed (a backend terminated while its COMMIT waits
// for a standby reports FATAL, committed).
func abortedForSure(err error) bool {
	var prep pgx.ErrPreprocessingBatch
	if errors.As(err, &prep) || errors.Is(err, errRolledBackAtCommit) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	severity := pgErr.SeverityUnlocalized
	if severity == "" {
		severity = pgErr.Severity
	}
	return severity == "ERROR"
}

// learnOutcome asks the server, on another connection, whether the
// group's transaction xid committed. One still in progress belongs to a
// backend the client has given up on (pid, whose connection pgx closed
// with a cancel): it is terminated, as a client that left cannot finish
// it, which makes the outcome final (a backend terminated after its
// commit record is written dies committed), and asked again. The backend
// is matched by its pid and the transaction it runs, so a reused pid is
// never hit. ctx bounds it: the members' own time.
func (t *Target) learnOutcome(ctx context.Context, xid uint64, pid uint32) (committed bool, err error) {
	terminated := false
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		var status *string
		if err := t.pool.QueryRow(ctx, `SELECT pg_xact_status($1::xid8)`, xid).Scan(&status); err != nil {
			return false, err
		}
		switch {
		case status == nil:
			return false, fmt.Errorf("the server knows nothing of transaction %d", xid)
		case *status == "committed":
			return true, nil
		case *status == "aborted":
			return false, nil
		}
		if !terminated {
			// backend_xid is the 32-bit xid, shown as text.
			if _, err := t.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE pid = $1 AND backend_xid::text = $2`, int64(pid), strconv.FormatUint(uint64(uint32(xid)), 10)); err != nil {
				return false, err
			}
			terminated = true
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return false, ctx.Err()
		case <-timer.C:
		}
	}
}

// blamable reports whether err is PostgreSQL refusing the statement it
// answers, rather than a failure of the connection or of the client, or
// an error pgx met preparing the batch (which names a statement, not a
// member: several members may share its text).
func blamable(err error) bool {
	var prep pgx.ErrPreprocessingBatch
	if errors.As(err, &prep) {
		return false
	}
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Severity != "FATAL" && pgErr.Severity != "PANIC"
}

// groupContext bounds a group: half of the time the member with the least
// left has (its context's deadline or its request's, or the target's
// timeout), so that any member sent to commit alone keeps at least the
// other half. learn, the group's parent, has all of that time: it bounds
// learning the outcome of a group cut short, which the members wait for.
// Both end early once every member's context has ended: nobody waits for
// the outcome any more, and a shutdown cuts the group short as it would
// their own commits.
func (t *Target) groupContext(members []*groupMember) (group, learn context.Context, cancel context.CancelFunc) {
	left := t.timeout
	for _, m := range members {
		if d, ok := m.ctx.Deadline(); ok {
			left = min(left, time.Until(d))
		}
		if !m.req.Deadline.IsZero() {
			left = min(left, time.Until(m.req.Deadline))
		}
	}
	learn, cancelLearn := context.WithTimeout(context.Background(), left)
	group, cancelGroup := context.WithTimeout(learn, left/2)
	var live atomic.Int64
	live.Store(int64(len(members)))
	stops := make([]func() bool, len(members))
	for i, m := range members {
		stops[i] = context.AfterFunc(m.ctx, func() {
			if live.Add(-1) == 0 {
				cancelLearn()
			}
		})
	}
	return group, learn, func() {
		for _, stop := range stops {
			stop()
		}
		cancelGroup()
		cancelLearn()
	}
}

// groupMoves are a group's checkpoint moves, as the parallel arrays
// projectord.advance_group takes (migration 0010).
type groupMoves struct {
	projectors                 []string
	epochs                     []int64
	fromXIDs, toXIDs           []uint64
	fromPositions, toPositions []int64
	events                     []int64
}

func newGroupMoves(n int) *groupMoves {
	return &groupMoves{
		projectors: make([]string, 0, n), epochs: make([]int64, 0, n),
		fromXIDs: make([]uint64, 0, n), toXIDs: make([]uint64, 0, n),
		fromPositions: make([]int64, 0, n), toPositions: make([]int64, 0, n),
		events: make([]int64, 0, n),
	}
}

func (g *groupMoves) add(req *CommitRequest) {
	g.projectors = append(g.projectors, req.Projector)
	g.epochs = append(g.epochs, req.Epoch)
	g.fromXIDs = append(g.fromXIDs, req.From.XID)
	g.fromPositions = append(g.fromPositions, req.From.Position)
	g.toXIDs = append(g.toXIDs, req.To.XID)
	g.toPositions = append(g.toPositions, req.To.Position)
	g.events = append(g.events, int64(len(req.Events)))
}

func (g *groupMoves) queue(b *pgx.Batch) {
	b.Queue(`SELECT projectord.advance_group($1, $2, $3, $4, $5, $6, $7)`,
		g.projectors, g.epochs, g.fromXIDs, g.fromPositions, g.toXIDs, g.toPositions, g.events)
}

// advanceGroupRefusal is advance_group's SQLSTATE when it refuses a
// member (fenced, paused, superseded, or its row held past the group's
// lock_timeout); its DETAIL is the member's place, from 1.
const advanceGroupRefusal = "PJ003"

// refusedMember is the index of the member advance_group's error err
// refuses, or -1 when err is not such a refusal (nobody's: the statement
// failed some other way) or names no member of n.
func refusedMember(err error, n int) int {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != advanceGroupRefusal || !blamable(err) {
		return -1
	}
	k, perr := strconv.Atoi(pgErr.Detail)
	if perr != nil || k < 1 || k > n {
		return -1
	}
	return k - 1
}
