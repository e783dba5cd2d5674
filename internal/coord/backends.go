package coord

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Keepalives are the server-side socket settings for a connection: the
// coordination session's, applied to pool connections too, so PostgreSQL
// drops the backends of a cut-off replica instead of keeping them (and
// their transactions) for hours.
type Keepalives struct {
	Idle, Interval time.Duration
	Count          int
	UserTimeout    time.Duration
}

// params returns the run-time parameters that carry k to the server.
func (k Keepalives) params() map[string]string {
	p := map[string]string{}
	if k.Idle > 0 {
		p["tcp_keepalives_idle"] = strconv.Itoa(max(1, int(k.Idle.Seconds())))
	}
	if k.Interval > 0 {
		p["tcp_keepalives_interval"] = strconv.Itoa(max(1, int(k.Interval.Seconds())))
	}
	if k.Count > 0 {
		p["tcp_keepalives_count"] = strconv.Itoa(k.Count)
	}
	if k.UserTimeout > 0 {
		p["tcp_user_timeout"] = strconv.FormatInt(k.UserTimeout.Milliseconds(), 10)
	}
	return p
}

// PoolBackends is the registry of this replica's pool connections. Each
// connection registers its backend (pid and backend_start) as it connects;
// the coordination session writes the set into the node row's
// pool_backends at every heartbeat, and a standby taking over from this
// node, once it is stalled, terminates exactly those backends, whatever
// their application_name (docs/architecture.md, rule 4).
//
// A registration is in the node row before the connection is used: the
// connect waits for the session to write it (it forces a heartbeat), and
// while the session is down, or not yet started, this replica holds no
// lease and the session writes the whole set before its next acquire. A
// connection whose registration is not written in time fails to connect.
// So a stalled node's unregistered connections, if any, were never handed
// out and hold neither an xid nor a lock.
//
// Only backends of the coordination database's cluster can be terminated:
// a pool on another cluster registers too, but takeover, run from the
// coordination cluster, cannot reach it (an entry hits a backend there
// only if pid and backend_start, to the microsecond, both coincide); such
// a pool only has the server-side keepalives, which end the connections of
// a cut-off replica but not of a frozen one.
type PoolBackends struct {
	mu      sync.Mutex
	conns   map[*pgconn.PgConn]poolBackend
	gen     uint64        // bumped by every registration
	written uint64        // newest gen recorded in the node row
	changed chan struct{} // closed and replaced when written moves or the session goes down
	sess    *Session
	// setNames/setValues are the settings each connection makes as it
	// registers (the server-side keepalives).
	setNames, setValues []string
}

type poolBackend struct {
	pid   int32
	start time.Time
}

// NewPoolBackends returns an empty registry. Install it on every pool of
// the replica and pass it to the session as Config.PoolBackends.
func NewPoolBackends() *PoolBackends {
	return &PoolBackends{conns: map[*pgconn.PgConn]poolBackend{}, changed: make(chan struct{})}
}

// Install makes every connection of pc register with b, and sets k's
// server-side keepalives unless the URL already sets them. It chains any
// AfterConnect and BeforeClose already configured.
func (b *PoolBackends) Install(pc *pgxpool.Config, k Keepalives) {
	// Set after connecting (set_config, in the registration's query) and
	// not as startup parameters: a connection pooler such as PgBouncer in
	// front of a pool refuses startup parameters it does not know, and
	// would refuse the connection.
	set := map[string]string{}
	for name, v := range k.params() {
		if _, ok := pc.ConnConfig.RuntimeParams[name]; !ok {
			set[name] = v
		}
	}
	names := make([]string, 0, len(set))
	values := make([]string, 0, len(set))
	for name, v := range set {
		names, values = append(names, name), append(values, v)
	}
	b.mu.Lock()
	b.setNames, b.setValues = names, values
	b.mu.Unlock()
	after, before := pc.AfterConnect, pc.BeforeClose
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if after != nil {
			if err := after(ctx, c); err != nil {
				return err
			}
		}
		return b.register(ctx, c)
	}
	pc.BeforeClose = func(c *pgx.Conn) {
		b.mu.Lock()
		delete(b.conns, c.PgConn())
		b.mu.Unlock()
		if before != nil {
			before(c)
		}
	}
}

func (b *PoolBackends) register(ctx context.Context, c *pgx.Conn) error {
	// The session's own deadline bounds this, so a slow session fails the
	// connect instead of handing out an unregistered connection.
	wait := 2 * time.Second
	b.mu.Lock()
	if b.sess != nil {
		wait = 2 * b.sess.opTimeout()
	}
	b.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var e poolBackend
	b.mu.Lock()
	names, values := b.setNames, b.setValues
	b.mu.Unlock()
	if err := c.QueryRow(ctx, `SELECT a.pid, a.backend_start
		FROM pg_stat_activity a, (SELECT count(set_config(n, v, false)) FROM unnest($1::text[], $2::text[]) AS s(n, v)) s
		WHERE a.pid = pg_backend_pid()`, names, values).Scan(&e.pid, &e.start); err != nil {
		return fmt.Errorf("error registering pool connection for takeover: %w", err)
	}
	b.mu.Lock()
	b.conns[c.PgConn()] = e
	b.gen++
	gen, s := b.gen, b.sess
	b.mu.Unlock()
	if s == nil || !s.flushBackends() {
		// No session up, so no lease: the session writes the set before
		// it acquires anything.
		return nil
	}
	for {
		b.mu.Lock()
		done, changed := b.written >= gen, b.changed
		b.mu.Unlock()
		if done || !s.Up() {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("pool connection (backend pid %d) not recorded in the node row for takeover within %s: coordination session too slow", e.pid, wait)
		}
	}
}

// snapshot returns the registered backends and the generation they make.
func (b *PoolBackends) snapshot() (gen uint64, pids []int32, starts []time.Time) {
	if b == nil {
		return 0, []int32{}, []time.Time{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	pids, starts = make([]int32, 0, len(b.conns)), make([]time.Time, 0, len(b.conns))
	for _, e := range b.conns {
		pids, starts = append(pids, e.pid), append(starts, e.start)
	}
	return b.gen, pids, starts
}

// dirty reports whether a registration is not yet in the node row.
func (b *PoolBackends) dirty() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen > b.written
}

// recorded notes that the node row holds every registration up to gen.
func (b *PoolBackends) recorded(gen uint64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if gen > b.written {
		b.written = gen
	}
	b.mu.Unlock()
	b.kick()
}

// kick wakes registrations waiting for the node row.
func (b *PoolBackends) kick() {
	if b == nil {
		return
	}
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *PoolBackends) attach(s *Session) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.sess = s
	b.mu.Unlock()
}
