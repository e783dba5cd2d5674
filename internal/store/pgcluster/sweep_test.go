package pgcluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
)

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	pid := cmd.Process.Pid
	require.False(t, processAlive(pid))
	return pid
}

func TestSweepStaleDirs(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	mkdir := func(name string) string {
		dir := filepath.Join(tmp, name)
		require.NoError(t, os.MkdirAll(filepath.Join(dir, dataDirName), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, logFileName), []byte("log"), 0o600))
		return dir
	}
	dead := deadPID(t)
	stale := mkdir(fmt.Sprintf("projectord-pg-%d-1", dead))
	liveOwner := mkdir("projectord-pg-1-2") // pid 1 never dies
	ours := mkdir(fmt.Sprintf("projectord-pg-%d-3", os.Getpid()))
	unrelated := mkdir("projectord-pg-x-4")
	// Owner dead, but its postmaster (here: ourselves) still running.
	running := mkdir(fmt.Sprintf("projectord-pg-%d-5", dead))
	require.NoError(t, os.WriteFile(filepath.Join(running, dataDirName, "postmaster.pid"),
		[]byte(strconv.Itoa(os.Getpid())+"\n"+running+"\n"), 0o600))

	sweepStaleDirs(zaptest.NewLogger(t), tmp)

	require.NoDirExists(t, stale)
	for _, kept := range []string{liveOwner, ours, unrelated, running} {
		require.DirExists(t, kept)
	}
}

func TestOwnerPID(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]int{
		"projectord-pg-42-123": 42,
		"projectord-pg-42-":    42,
		"projectord-pg-42":     0,
		"projectord-pg-0-1":    0,
		"projectord-pg--1-1":   0,
		"projectord-pg-x-1":    0,
		"other-42-1":           0,
	} {
		pid, ok := ownerPID(name)
		require.Equal(t, want != 0, ok, name)
		require.Equal(t, want, pid, name)
	}
}
