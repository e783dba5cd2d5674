package server

import (
	"net"
	"sync"
	"sync/atomic"
)

// limitListener holds at most n connections at a time. A newcomer beyond
// the cap is accepted (one descriptor more, at most: Serve accepts one at a
// time), full is called, and it waits for a slot; further clients wait in
// the kernel's backlog, holding no file descriptor of this process.
type limitListener struct {
	net.Listener
	slots     chan struct{}
	full      func() // called when a newcomer finds every slot taken
	waiting   atomic.Bool
	done      chan struct{}
	closeOnce sync.Once
}

// Waiting reports whether a newcomer waits for a slot.
func (l *limitListener) Waiting() bool { return l.waiting.Load() }

func newLimitListener(l net.Listener, n int, full func()) *limitListener {
	return &limitListener{Listener: l, slots: make(chan struct{}, n), full: full, done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	select {
	case l.slots <- struct{}{}:
	default:
		// Waiting first, so that a connection going idle after full has
		// looked is seen by whoever checks Waiting.
		l.waiting.Store(true)
		l.full()
		select {
		case l.slots <- struct{}{}:
			l.waiting.Store(false)
		case <-l.done:
			l.waiting.Store(false)
			c.Close()
			return nil, net.ErrClosed
		}
		select {
		case <-l.done: // the slot was freed by the shutdown, not for a newcomer
			<-l.slots
			c.Close()
			return nil, net.ErrClosed
		default:
		}
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	err := l.Listener.Close()
	l.closeOnce.Do(func() { close(l.done) })
	return err
}

// limitConn frees its slot on the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
