package pgcluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"
)

// dirPrefix starts the name of every cluster's temporary directory. The
// owner's pid follows, so that a later run can tell whether the owner is
// still alive: projectord-pg-<pid>-<random>.
const dirPrefix = "projectord-pg-"

func ownedDirPattern(pid int) string {
	return fmt.Sprintf("%s%d-*", dirPrefix, pid)
}

// ownerPID extracts the owner's pid from a directory name made from
// ownedDirPattern.
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, dirPrefix)
	if !ok {
		return 0, false
	}
	pidText, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidText)
	// pid 0 and negative pids address process groups in kill(2).
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// sweepStaleDirs removes the cluster directories under tmp whose owning
// process has died without calling Close: a test binary killed by its
// timeout or by kill -9 cannot clean up after itself. The postmaster it
// left behind has already been stopped by its parent death signal.
func sweepStaleDirs(logger *zap.Logger, tmp string) {
	entries, err := os.ReadDir(tmp)
	if err != nil {
		logger.Warn("error listing temporary directory; not sweeping stale clusters", zap.String("dir", tmp), zap.Error(err))
		return
	}
	for _, e := range entries {
		pid, ok := ownerPID(e.Name())
		if !ok || !e.IsDir() || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		dir := filepath.Join(tmp, e.Name())
		// A postmaster that outlived its owner (no parent death signal on
		// this platform, or it is still shutting down) keeps its files; a
		// later sweep will get them.
		if pm, ok := postmasterPID(dir); ok && processAlive(pm) {
			logger.Warn("stale cluster directory still has a running postmaster; leaving it",
				zap.String("dir", dir), zap.Int("postmaster_pid", pm))
			continue
		}
		// Several test binaries may sweep at once; losing that race is fine.
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			logger.Warn("error removing stale cluster directory", zap.String("dir", dir), zap.Error(err))
			continue
		}
		logger.Info("removed stale cluster directory", zap.String("dir", dir), zap.Int("owner_pid", pid))
	}
}

// postmasterPID reads the pid from the lock file PostgreSQL keeps in its
// data directory while running.
func postmasterPID(rootDir string) (int, bool) {
	f, err := os.Open(filepath.Join(rootDir, dataDirName, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(s.Text()))
	return pid, err == nil && pid > 0
}

// processAlive reports whether pid names a live process. EPERM means it
// exists but belongs to someone else, which still counts as alive. A zombie
// has finished running and only waits to be reaped, which an orphan's
// adopter may never do, so it counts as dead.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		// Either it exited since kill(2) or there is no procfs: ask again.
		return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
	}
	// The state follows the parenthesised command name, which may itself
	// contain spaces and parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}
