package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Review of cgroupMemoryMax's walk. It is bounded by
// strings.HasPrefix(dir, root), a string prefix, not a path prefix: a
// directory beside the mount whose name starts with the mount's
// ("/sys/fs/cgroup2", "/sys/fs/cgroup-old") passes it. /proc/self/cgroup
// paths are relative to the reader's cgroup namespace and read "/.." when
// the process's cgroup lies outside that namespace's root, so the path
// itself can lead there; the walk then takes its limit from files that
// are not the process's cgroups at all.
func TestReviewGCWalkStaysInsideTheMount(t *testing.T) {
	for _, self := range []string{"/../cgroup-old/a", "../cgroup-old/a"} {
		t.Run(self, func(t *testing.T) {
			dir := t.TempDir()
			mount := filepath.Join(dir, "cgroup")
			require.NoError(t, os.MkdirAll(mount, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(mount, "memory.max"), []byte("max\n"), 0o644))
			outside := filepath.Join(dir, "cgroup-old", "a")
			require.NoError(t, os.MkdirAll(outside, 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(outside, "memory.max"), []byte("1048576\n"), 0o644))
			proc := filepath.Join(dir, "proc-self-cgroup")
			require.NoError(t, os.WriteFile(proc, []byte("0::"+self+"\n"), 0o644))
			n, ok := cgroupMemoryMax(proc, mount)
			require.False(t, ok, "a limit of %d bytes read from %s, outside the mount %s", n, outside, mount)
		})
	}
}

// The cases the brief lists that cgroupMemoryMax does get right, kept so
// that a change to the walk cannot silently break them.
func TestReviewGCLimitsItGetsRight(t *testing.T) {
	write := func(t *testing.T, path, s string) {
		t.Helper()
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(s), 0o644))
	}
	t.Run("the walk ends at the mount, also for the root path", func(t *testing.T) {
		dir := t.TempDir()
		mount := filepath.Join(dir, "cgroup")
		write(t, filepath.Join(dir, "memory.max"), "1048576\n") // above the mount: never read
		write(t, filepath.Join(mount, "memory.max"), "max\n")
		proc := filepath.Join(dir, "proc")
		for _, self := range []string{"/", "", "/../..", "a/../../.."} {
			write(t, proc, "0::"+self+"\n")
			_, ok := cgroupMemoryMax(proc, mount)
			require.False(t, ok, "path %q", self)
		}
	})
	t.Run("unreadable or garbage limit files are no limit, the walk goes on", func(t *testing.T) {
		dir := t.TempDir()
		mount := filepath.Join(dir, "cgroup")
		write(t, filepath.Join(mount, "a", "memory.max"), "2097152\n")
		write(t, filepath.Join(mount, "a", "b", "memory.max"), "garbage\n")
		require.NoError(t, os.MkdirAll(filepath.Join(mount, "a", "b", "c", "memory.max"), 0o755)) // a directory: unreadable
		proc := filepath.Join(dir, "proc")
		write(t, proc, "0::/a/b/c\n")
		n, ok := cgroupMemoryMax(proc, mount)
		require.True(t, ok)
		require.Equal(t, int64(2<<20), n)
	})
	t.Run("a hybrid host: v2's line without a memory controller, several v1 lines", func(t *testing.T) {
		dir := t.TempDir()
		mount := filepath.Join(dir, "cgroup")
		// This machine's own layout: v1 controllers, the memory one in
		// a named group, and a "0::/" line for the v2 hierarchy mounted
		// elsewhere (unified/), which has no memory.max at the mount.
		write(t, filepath.Join(mount, "unified", "memory.max"), "1048576\n")
		write(t, filepath.Join(mount, "memory", "pa", "x", "memory.limit_in_bytes"), "9223372036854771712\n")
		write(t, filepath.Join(mount, "memory", "pa", "memory.limit_in_bytes"), "4194304\n")
		write(t, filepath.Join(mount, "memory", "memory.limit_in_bytes"), "9223372036854710272\n") // 64 KiB pages' "no limit"
		proc := filepath.Join(dir, "proc")
		write(t, proc, "9:name=systemd:/\n8:pids:/\n4:memory:/pa/x\n2:cpuacct:/\n1:cpu:/\n0::/\n")
		n, ok := cgroupMemoryMax(proc, mount)
		require.True(t, ok)
		require.Equal(t, int64(4<<20), n)
	})
}

// tuneGC leaves GOGC and GOMEMLIMIT to the runtime when they are set, and
// logs their values as given. Both settings are process-wide: the test
// sets its own before and restores the previous after, and is not
// parallel (t.Setenv). GOMEMLIMIT is set in every case so that this
// machine's own cgroup limit never enters.
func TestReviewGCHonoursTheEnvironment(t *testing.T) {
	const mine = 123
	prevPercent := debug.SetGCPercent(mine)
	prevLimit := debug.SetMemoryLimit(1 << 40)
	t.Cleanup(func() {
		debug.SetGCPercent(prevPercent)
		debug.SetMemoryLimit(prevLimit)
	})
	t.Setenv("GOMEMLIMIT", "1TiB")
	for _, tc := range []struct {
		gogc string
		want int
		log  any
	}{
		{"off", mine, "off"},
		{"50", mine, "50"},
		{"", daemonGCPercent, "200"},
	} {
		t.Run("GOGC="+tc.gogc, func(t *testing.T) {
			t.Setenv("GOGC", tc.gogc)
			debug.SetGCPercent(mine)
			core, logs := observer.New(zap.InfoLevel)
			tuneGC(zap.New(core))
			require.Equal(t, tc.want, debug.SetGCPercent(mine), "the collector's percent after tuneGC")
			require.Equal(t, int64(1<<40), debug.SetMemoryLimit(-1), "GOMEMLIMIT set: the limit is left alone")
			entries := logs.FilterMessage("garbage collector").All()
			require.Len(t, entries, 1)
			fields := entries[0].ContextMap()
			require.Equal(t, tc.log, fields["gogc"])
			from := "environment"
			if tc.gogc == "" {
				from = "projectord"
			}
			require.Equal(t, from, fields["gogc_from"])
			require.Equal(t, "1TiB", fields["memory_limit"])
			require.Equal(t, "environment", fields["memory_limit_from"])
			require.Len(t, fields, 4, "nothing else logged: %v", fields)
		})
	}
}
