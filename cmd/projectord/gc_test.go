package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeCgroups lays out a cgroup v2 hierarchy under a temporary mount:
// limits maps a path under it ("" for the root) to its memory.max.
func fakeCgroups(t *testing.T, self string, limits map[string]string) (procCgroup, mount string) {
	t.Helper()
	dir := t.TempDir()
	mount = filepath.Join(dir, "cgroup")
	for path, limit := range limits {
		d := filepath.Join(mount, path)
		require.NoError(t, os.MkdirAll(d, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(d, "memory.max"), []byte(limit+"\n"), 0o644))
	}
	procCgroup = filepath.Join(dir, "proc-self-cgroup")
	require.NoError(t, os.WriteFile(procCgroup, []byte("0::"+self+"\n"), 0o644))
	return procCgroup, mount
}

func TestCgroupMemoryMax(t *testing.T) {
	t.Run("a container's own limit", func(t *testing.T) {
		proc, mount := fakeCgroups(t, "/", map[string]string{"": "268435456"})
		n, ok := cgroupMemoryMax(proc, mount)
		require.True(t, ok)
		require.Equal(t, int64(256<<20), n)
	})
	t.Run("the tightest along the path", func(t *testing.T) {
		proc, mount := fakeCgroups(t, "/system.slice/projectord.service", map[string]string{
			"":                                "max",
			"system.slice":                    "1073741824",
			"system.slice/projectord.service": "max",
		})
		n, ok := cgroupMemoryMax(proc, mount)
		require.True(t, ok)
		require.Equal(t, int64(1<<30), n)
	})
	t.Run("no limit anywhere", func(t *testing.T) {
		proc, mount := fakeCgroups(t, "/a/b", map[string]string{"": "max", "a": "max", "a/b": "max"})
		_, ok := cgroupMemoryMax(proc, mount)
		require.False(t, ok)
	})
	t.Run("cgroup v1 or hybrid", func(t *testing.T) {
		// A hybrid host: a v2 line with no memory.max, and v1's memory
		// controller, whose limit counts.
		dir := t.TempDir()
		proc := filepath.Join(dir, "proc-self-cgroup")
		require.NoError(t, os.WriteFile(proc, []byte("4:memory:/docker/abc\n1:cpu,cpuacct:/\n0::/\n"), 0o644))
		mount := filepath.Join(dir, "cgroup")
		mem := filepath.Join(mount, "memory", "docker", "abc")
		require.NoError(t, os.MkdirAll(mem, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(mem, "memory.limit_in_bytes"), []byte("536870912\n"), 0o644))
		n, ok := cgroupMemoryMax(proc, mount)
		require.True(t, ok)
		require.Equal(t, int64(512<<20), n)
		// v1's "no limit" is the largest multiple of the page size.
		require.NoError(t, os.WriteFile(filepath.Join(mem, "memory.limit_in_bytes"), []byte("9223372036854771712\n"), 0o644))
		_, ok = cgroupMemoryMax(proc, mount)
		require.False(t, ok)
	})
}
