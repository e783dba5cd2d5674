package pgtest_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/pgtest"
)

// helper runs this test binary again as a helper process of the given kind,
// running only TestHelperProcess.
func helper(t *testing.T, kind string) (*exec.Cmd, *bufio.Scanner, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+kind)
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, bufio.NewScanner(stdout), stderr
}

// TestHelperProcess is not a test: the tests below run the test binary
// again to have it play a test binary that gets interrupted.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "block" {
		t.Skip("helper process for TestInterruptCleansUp")
	}
	u := pgtest.NewDatabase(t)
	root, pid := "-", 0
	if c := pgtest.Cluster(); c != nil {
		root, pid = filepath.Dir(c.DataDir()), c.PID()
	}
	fmt.Printf("READY %s %s %d\n", u, root, pid)
	select {
	case <-time.After(time.Minute):
		t.Fatal("helper was not interrupted")
	case <-t.Context().Done():
	}
}

// TestInterruptCleansUp interrupts a test binary while its tests run:
// it must exit with 128+signal and leave no server, directory or database.
func TestInterruptCleansUp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tt.sig.String(), func(t *testing.T) {
			t.Parallel()
			cmd, stdout, stderr := helper(t, "block")
			var dbURL, root string
			var pid int
			for stdout.Scan() {
				if _, err := fmt.Sscanf(stdout.Text(), "READY %s %s %d", &dbURL, &root, &pid); err == nil {
					break
				}
			}
			require.NotEmpty(t, dbURL, "helper did not get ready; stderr:\n%s", stderr)

			require.NoError(t, cmd.Process.Signal(tt.sig))
			var exitErr *exec.ExitError
			require.True(t, errors.As(cmd.Wait(), &exitErr), "helper exited cleanly; stderr:\n%s", stderr)
			require.Equal(t, tt.code, exitErr.ExitCode(), "stderr:\n%s", stderr)

			if pid != 0 {
				require.NoDirExists(t, root)
				require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "postmaster %d survived", pid)
			} else {
				require.False(t, databaseExists(t, dbName(t, dbURL)))
			}
		})
	}
}

// TestFailedSetupFails checks that a template that cannot be prepared fails
// the run loudly and still leaves nothing behind.
func TestFailedSetupFails(t *testing.T) {
	t.Parallel()
	cmd, _, stderr := helper(t, "fail-setup")
	var exitErr *exec.ExitError
	require.True(t, errors.As(cmd.Wait(), &exitErr), "helper exited cleanly; stderr:\n%s", stderr)
	require.Equal(t, 1, exitErr.ExitCode())
	require.Contains(t, stderr.String(), "setup exploded")

	leftovers, err := filepath.Glob(filepath.Join(os.TempDir(), fmt.Sprintf("projectord-pg-%d-*", cmd.Process.Pid)))
	require.NoError(t, err)
	require.Empty(t, leftovers)
}
