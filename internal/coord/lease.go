package coord

import (
	"context"
	"errors"
	"sync"
)

var (
	// ErrNotLeader means another session holds the projector's lock.
	ErrNotLeader = errors.New("not leader: another replica holds the lock")
	// ErrUnavailable means the coordination session is not connected.
	ErrUnavailable = errors.New("coordination session unavailable")
	// ErrSessionLost means the session holding the lease failed or reconnected.
	ErrSessionLost = errors.New("coordination session lost")
	// ErrLockMissing means a heartbeat did not find a held lock in pg_locks.
	ErrLockMissing = errors.New("advisory lock no longer held")
	// ErrReleased means the lease was released by its holder.
	ErrReleased = errors.New("lease released")
	// ErrStopped means the session was stopped.
	ErrStopped = errors.New("coordination session stopped")
)

// Lease is leadership of one projector. Done is closed when it is lost or
// released; Err then says why.
type Lease struct {
	s    *Session
	name string
	id   int32

	once sync.Once
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func newLease(s *Session, name string, id int32) *Lease {
	return &Lease{s: s, name: name, id: id, done: make(chan struct{})}
}

// Name is the projector the lease is for.
func (l *Lease) Name() string { return l.name }

// Done is closed when the lease ends.
func (l *Lease) Done() <-chan struct{} { return l.done }

// Err returns why the lease ended, or nil while it is held.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *Lease) end(cause error) {
	l.once.Do(func() {
		l.mu.Lock()
		l.err = cause
		l.mu.Unlock()
		close(l.done)
	})
}

// Release unlocks the projector and notifies standbys. It is safe to call
// after the lease was lost and more than once.
func (l *Lease) Release(ctx context.Context) error {
	select {
	case <-l.done:
		return nil
	default:
	}
	err := l.s.release(ctx, l)
	l.end(ErrReleased)
	return err
}
