package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunNotifiesSystemd runs the daemon as systemd would for a Type=notify
// unit with a watchdog, against a database that does not answer: READY=1
// comes at once (readiness to the supervisor is not the database's), the
// watchdog is pinged while the process is live, and SIGTERM sends
// STOPPING=1 before a clean exit.
func TestRunNotifiesSystemd(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "sdn") // short: sun_path holds 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	require.NoError(t, err)
	defer conn.Close()

	port := freePort(t)
	cfg := writeFile(t, "notify.yaml", fmt.Sprintf(`
database: {url: 'postgres://projectord@127.0.0.1:1/app?connect_timeout=1'}
http: {listen: "127.0.0.1:%d"}
shutdown_timeout: 5s
projectors:
  - name: totals
    sink: {sql: {handlers: {A: "SELECT 1"}}}
`, port))
	p := &proc{cmd: exec.Command(binary, "run", "--config", cfg), out: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			t.Logf("output:\n%s", p.out.String())
		}
	})

	recv := func() string {
		t.Helper()
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		require.NoError(t, err, "no notification within 10s")
		return string(buf[:n])
	}
	ready := recv()
	require.True(t, strings.HasPrefix(ready, "READY=1\n"), "first message: %q", ready)
	require.Contains(t, ready, "\nSTATUS=")
	code, _ := get(fmt.Sprintf("http://127.0.0.1:%d/livez", port))
	require.Equal(t, 200, code, "serving when READY=1 is sent")
	code, _ = get(fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
	require.Equal(t, 503, code, "the database is down: not ready, yet started")

	// Pinged every 100ms (half of WATCHDOG_USEC) while live, database or not.
	for range 3 {
		require.Equal(t, "WATCHDOG=1", recv())
	}
	require.Contains(t, p.out.String(), "systemd watchdog enabled")

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	for {
		msg := recv()
		if msg == "WATCHDOG=1" {
			continue
		}
		require.True(t, strings.HasPrefix(msg, "STOPPING=1\n"), "got %q", msg)
		break
	}
	require.NoError(t, p.wait(t, 10*time.Second), "exits 0")
}
