package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/projectord/projectord/internal/runner"
)

// blockingHealth's /status handlers wait for release, holding their
// connection active.
type blockingHealth struct {
	fakeHealth
	entered chan struct{}
	release chan struct{}
}

func (b *blockingHealth) Snapshot() runner.Snapshot {
	b.entered <- struct{}{}
	<-b.release
	return runner.Snapshot{Node: "n1"}
}

// rawConn is an HTTP/1.1 client connection driven by hand.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

func (c *rawConn) send(t *testing.T, path string) {
	t.Helper()
	_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	require.NoError(t, err)
}

// answer reads one response, or fails within d.
func (c *rawConn) answer(d time.Duration) (int, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

func startWith(t *testing.T, h Health, log *zap.Logger, conns int) *Server {
	t.Helper()
	s := New("127.0.0.1:0", prometheus.NewRegistry(), h, log)
	s.maxConns = conns
	require.NoError(t, s.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return s
}

func TestConnectionCap(t *testing.T) {
	t.Parallel()
	h := &blockingHealth{fakeHealth: fakeHealth{live: true, ready: true}, entered: make(chan struct{}), release: make(chan struct{})}
	s := startWith(t, h, zap.NewNop(), 3)

	// Two connections busy in a handler and one idle keep-alive fill the cap.
	busy := []*rawConn{dial(t, s.Addr()), dial(t, s.Addr())}
	for _, c := range busy {
		c.send(t, "/status")
		<-h.entered
	}
	idle := dial(t, s.Addr())
	for range 2 { // at the cap, a connection it holds is still served
		idle.send(t, "/livez")
		code, err := idle.answer(10 * time.Second)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
	}

	// A fourth connection sheds the idle one instead of waiting for it.
	fourth := dial(t, s.Addr())
	fourth.send(t, "/livez")
	code, err := fourth.answer(10 * time.Second)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	_, err = idle.answer(10 * time.Second)
	var ne net.Error
	require.Error(t, err)
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the idle keep-alive connection was closed, not left open: %v", err)

	// With every connection busy, a newcomer waits.
	fourth.send(t, "/status")
	<-h.entered
	fifth := dial(t, s.Addr()) // the kernel completes the handshake; projectord does not serve it
	fifth.send(t, "/livez")
	_, err = fifth.answer(time.Second)
	require.ErrorAs(t, err, &ne)
	require.True(t, ne.Timeout(), "no answer while the cap is taken: %v", err)

	// Once the requests finish, the busy connections get their answers and
	// the newcomer is served.
	close(h.release)
	for _, c := range []*rawConn{busy[0], busy[1], fourth, fifth} {
		code, err = c.answer(10 * time.Second)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, code)
	}
}

type panickyHealth struct{ fakeHealth }

func (panickyHealth) Snapshot() runner.Snapshot { panic("snapshot exploded") }

func TestServerErrorsGoToTheLog(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.InfoLevel)
	s := startWith(t, &panickyHealth{}, zap.New(core), maxConns)
	_, err := http.Get("http://" + s.Addr() + "/status")
	require.Error(t, err, "the handler panicked; the server drops the connection")
	require.Eventually(t, func() bool {
		for _, e := range logs.All() {
			if e.Level == zap.WarnLevel && strings.Contains(e.Message, "panic serving") && strings.Contains(e.Message, "snapshot exploded") {
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "the server's own error log goes through zap")
}
