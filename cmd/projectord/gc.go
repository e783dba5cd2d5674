package main

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// The daemon's garbage collector settings, unless the environment sets
// them (GOGC, GOMEMLIMIT: Go's own variables, which always win).
//
// At the live tail the daemon allocates steadily (every head change: a
// batch, a commit request and pgx's statements for each projector) while
// its live heap stays small, bounded by the memory budget; with Go's
// default GOGC of 100 the collector then runs several times a second and
// took about a tenth of the process's CPU in the live benchmark. At 200
// it runs a third as often (docs/benchmarks.md). 400 saved no more CPU
// measurably, but let an idle replica of 500 projectors keep 130 MB
// (the heap's goal is a multiple of what is live, and an idle process
// keeps what it reached: 56 MB at 100, 86-94 MB at 200). The heap may
// grow to three times what is live, so a memory limit comes with it:
// three quarters of the process's cgroup
// memory limit (a Kubernetes container's, a systemd unit's MemoryMax),
// past which the collector runs as often as it must, whatever GOGC says.
const (
	daemonGCPercent  = 200
	memoryLimitOfMax = 0.75
	cgroupMount      = "/sys/fs/cgroup"
	procSelfCgroup   = "/proc/self/cgroup"
)

// tuneGC applies the daemon's collector settings and logs what it chose:
// gogc and memory_limit as strings (a number, "off" or "none", or the
// environment's value as given), each with where it came from.
func tuneGC(log *zap.Logger) {
	gogc, gogcFrom := os.Getenv("GOGC"), "environment"
	if gogc == "" {
		debug.SetGCPercent(daemonGCPercent)
		gogc, gogcFrom = strconv.Itoa(daemonGCPercent), "projectord"
	}
	limit, limitFrom := os.Getenv("GOMEMLIMIT"), "environment"
	if limit == "" {
		limit, limitFrom = "none", "none"
		if max, ok := cgroupMemoryMax(procSelfCgroup, cgroupMount); ok {
			n := int64(float64(max) * memoryLimitOfMax)
			debug.SetMemoryLimit(n)
			limit, limitFrom = strconv.FormatInt(n, 10), "cgroup (3/4 of "+strconv.FormatInt(max, 10)+")"
		}
	}
	log.Info("garbage collector", zap.String("gogc", gogc), zap.String("gogc_from", gogcFrom),
		zap.String("memory_limit", limit), zap.String("memory_limit_from", limitFrom))
}

// cgroupMemoryMax is the tightest memory limit of the cgroup the process
// runs in and of its ancestors: cgroup v2's memory.max along the path the
// "0::" line of procCgroup names under mount, or, on a v1 or hybrid
// hierarchy, v1's memory.limit_in_bytes along the memory controller's
// path under mount/memory. ok is false when there is no limit.
func cgroupMemoryMax(procCgroup, mount string) (limit int64, ok bool) {
	v2, v1 := cgroupPaths(procCgroup)
	tightest := func(root, path, file string) {
		// Bounded by the mount as a path, not as a string: a path with
		// ".." (a cgroup outside the process's cgroup namespace) must not
		// reach a sibling whose name starts with the mount's.
		for dir := filepath.Join(root, path); dir == root || strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
			if n, set := readLimit(filepath.Join(dir, file)); set && (!ok || n < limit) {
				limit, ok = n, true
			}
			if dir == root {
				break
			}
		}
	}
	if v2 != "" {
		tightest(mount, v2, "memory.max")
	}
	if !ok && v1 != "" {
		tightest(filepath.Join(mount, "memory"), v1, "memory.limit_in_bytes")
	}
	return limit, ok
}

// cgroupPaths reads the process's cgroup paths from /proc/self/cgroup: v2's
// (the "0::" line) and v1's memory controller's.
func cgroupPaths(procCgroup string) (v2, v1 string) {
	f, err := os.Open(procCgroup)
	if err != nil {
		return "", ""
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		id, rest, _ := strings.Cut(s.Text(), ":")
		controllers, path, _ := strings.Cut(rest, ":")
		switch {
		case id == "0" && controllers == "":
			v2 = path
		case slices.Contains(strings.Split(controllers, ","), "memory"):
			v1 = path
		}
	}
	return v2, v1
}

// readLimit reads a limit file: a number of bytes, or "max" (none). cgroup
// v1 writes "no limit" as a huge number (the largest multiple of the page
// size), taken as none too.
func readLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0, false
	}
	return n, true
}
