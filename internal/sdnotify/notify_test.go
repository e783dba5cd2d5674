package sdnotify_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/sdnotify"
)

// listen opens a real unixgram socket, as systemd's notify socket is, at
// name (a path, or "@..." for an abstract socket) and closes it at cleanup.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// socketPath returns a socket path under t.TempDir(), which on some systems
// exceeds the 108-byte limit of sun_path: then a short directory is used.
func socketPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "notify.sock")
	if len(p) < 100 {
		return p
	}
	dir, err := os.MkdirTemp("", "sd")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return filepath.Join(dir, "n.sock")
}

// recv returns the next datagram, failing the test if none arrives within d.
func recv(t *testing.T, conn *net.UnixConn, d time.Duration) string {
	t.Helper()
	msg, ok := tryRecv(t, conn, d)
	require.True(t, ok, "no datagram within %s", d)
	return msg
}

// tryRecv returns the next datagram, or false if none arrives within d.
func tryRecv(t *testing.T, conn *net.UnixConn, d time.Duration) (string, bool) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(d)))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "", false
	}
	require.NoError(t, err)
	return string(buf[:n]), true
}

func TestNotifySendsExactDatagrams(t *testing.T) {
	t.Parallel()
	path := socketPath(t)
	conn := listen(t, path)
	n := sdnotify.Notifier{Socket: path}

	steps := []struct {
		send func() (bool, error)
		want string
	}{
		{n.Ready, "READY=1"},
		{func() (bool, error) { return n.Status("catching up\nsecond line") }, "STATUS=catching up second line"},
		{n.Watchdog, "WATCHDOG=1"},
		{func() (bool, error) { return n.Notify("STOPPING=1\nSTATUS=stopping") }, "STOPPING=1\nSTATUS=stopping"},
		{n.Stopping, "STOPPING=1"},
	}
	for _, s := range steps {
		sent, err := s.send()
		require.NoError(t, err)
		require.True(t, sent)
		require.Equal(t, s.want, recv(t, conn, 5*time.Second), "one datagram per call, byte for byte")
	}
	_, more := tryRecv(t, conn, 20*time.Millisecond)
	require.False(t, more, "nothing else was sent")
}

func TestNotifyAbstractSocket(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("@projectord-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	conn := listen(t, name)
	sent, err := sdnotify.Notifier{Socket: name}.Ready()
	require.NoError(t, err)
	require.True(t, sent)
	require.Equal(t, "READY=1", recv(t, conn, 5*time.Second))
}

func TestNotifyWithoutSocketIsNoop(t *testing.T) {
	t.Parallel()
	var n sdnotify.Notifier
	for _, send := range []func() (bool, error){n.Ready, n.Stopping, n.Watchdog, func() (bool, error) { return n.Status("x") }} {
		sent, err := send()
		require.NoError(t, err)
		require.False(t, sent)
	}
	_, ok := n.WatchdogInterval()
	require.False(t, ok)
}

func TestNotifyErrors(t *testing.T) {
	t.Parallel()
	for name, socket := range map[string]string{
		"nobody listening": filepath.Join(t.TempDir(), "absent.sock"),
		"vsock":            "vsock:2:1234",
		"relative path":    "notify.sock",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sent, err := sdnotify.Notifier{Socket: socket}.Ready()
			require.Error(t, err)
			require.False(t, sent)
		})
	}
}

// The package-level functions read the process environment (so this test
// cannot run in parallel with others that set it).
func TestPackageFunctionsUseEnvironment(t *testing.T) {
	path := socketPath(t)
	conn := listen(t, path)
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "30000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))

	for _, c := range []struct {
		send func() (bool, error)
		want string
	}{
		{sdnotify.Ready, "READY=1"},
		{sdnotify.Watchdog, "WATCHDOG=1"},
		{func() (bool, error) { return sdnotify.Status("up") }, "STATUS=up"},
		{sdnotify.Stopping, "STOPPING=1"},
		{func() (bool, error) { return sdnotify.Notify("EXTEND_TIMEOUT_USEC=1000000") }, "EXTEND_TIMEOUT_USEC=1000000"},
	} {
		sent, err := c.send()
		require.NoError(t, err)
		require.True(t, sent)
		require.Equal(t, c.want, recv(t, conn, 5*time.Second))
	}
	iv, ok := sdnotify.WatchdogInterval()
	require.True(t, ok)
	require.Equal(t, 30*time.Second, iv)

	t.Setenv("NOTIFY_SOCKET", "")
	sent, err := sdnotify.Ready()
	require.NoError(t, err)
	require.False(t, sent)
}

func TestWatchdogInterval(t *testing.T) {
	t.Parallel()
	me := strconv.Itoa(os.Getpid())
	cases := map[string]struct {
		usec, pid string
		want      time.Duration
		ok        bool
	}{
		"unset":              {"", "", 0, false},
		"no pid":             {"30000000", "", 30 * time.Second, true},
		"our pid":            {"500000", me, 500 * time.Millisecond, true},
		"another pid":        {"30000000", strconv.Itoa(os.Getpid() + 1), 0, false},
		"garbage pid":        {"30000000", "x", 0, false},
		"zero":               {"0", "", 0, false},
		"negative":           {"-5", "", 0, false},
		"not a number":       {"30s", "", 0, false},
		"overflows uint63":   {"99999999999999999999", "", 0, false},
		"overflows Duration": {"9223372036854776", "", 0, false},
		"largest":            {"9223372036854775", "", 9223372036854775 * time.Microsecond, true},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, ok := sdnotify.Notifier{WatchdogUSec: c.usec, WatchdogPID: c.pid}.WatchdogInterval()
			require.Equal(t, c.ok, ok)
			require.Equal(t, c.want, got)
		})
	}
}

func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	t.Parallel()
	path := socketPath(t)
	conn := listen(t, path)
	var healthy atomic.Bool
	healthy.Store(true)
	// checks receives a value each time the loop consults healthy, so the
	// test can tell where the loop is without sleeping.
	checks := make(chan bool, 1000)
	loop := sdnotify.Notifier{Socket: path}.StartWatchdog(time.Millisecond, func() bool {
		h := healthy.Load()
		checks <- h
		return h
	}, func(err error) { t.Errorf("unexpected send error: %v", err) })
	defer loop.Stop()

	for range 3 {
		require.Equal(t, "WATCHDOG=1", recv(t, conn, 5*time.Second))
	}

	healthy.Store(false)
	// Once the loop has seen "unhealthy", its earlier pings have been
	// written: drain them, then no further datagram may arrive.
	waitCheck(t, checks, false)
	drain(t, conn)
	for range 5 {
		waitCheck(t, checks, false)
	}
	_, got := tryRecv(t, conn, 10*time.Millisecond)
	require.False(t, got, "no ping while unhealthy")

	healthy.Store(true)
	require.Equal(t, "WATCHDOG=1", recv(t, conn, 5*time.Second), "pings resume when healthy again")

	loop.Stop()
	loop.Stop() // safe twice
	drain(t, conn)
	_, got = tryRecv(t, conn, 20*time.Millisecond)
	require.False(t, got, "no ping after Stop returned")
}

func TestWatchdogReportsSendErrors(t *testing.T) {
	t.Parallel()
	errs := make(chan error, 10)
	loop := sdnotify.Notifier{Socket: filepath.Join(t.TempDir(), "absent.sock")}.StartWatchdog(time.Hour,
		func() bool { return true }, func(err error) { errs <- err })
	defer loop.Stop()
	select {
	case err := <-errs:
		require.ErrorContains(t, err, "error notifying systemd")
	case <-time.After(5 * time.Second):
		t.Fatal("the first ping is sent at once, and its error reported")
	}
}

// waitCheck waits for the loop to consult its health check and get want.
func waitCheck(t *testing.T, checks <-chan bool, want bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case h := <-checks:
			if h == want {
				return
			}
		case <-deadline:
			t.Fatalf("the watchdog loop did not check health (want %v) within 5s", want)
		}
	}
}

// drain reads every datagram already queued on conn.
func drain(t *testing.T, conn *net.UnixConn) {
	t.Helper()
	for {
		if _, ok := tryRecv(t, conn, time.Millisecond); !ok {
			return
		}
	}
}
