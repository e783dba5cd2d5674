package pgcluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// fakeBinaries creates executable stand-ins for names in dir.
func fakeBinaries(t *testing.T, dir string, names ...string) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for _, n := range names {
		require.NoError(t, os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755))
	}
	return dir
}

func TestFindBinaries(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	lib := filepath.Join(root, "lib")
	for _, v := range []string{"9.6", "13", "15", "not-a-version"} {
		fakeBinaries(t, filepath.Join(lib, v, "bin"), "initdb", "pg_ctl", "postgres")
	}
	fakeBinaries(t, filepath.Join(lib, "16", "bin"), "initdb") // incomplete install
	glob := filepath.Join(lib, "*", "bin")
	onPath := fakeBinaries(t, filepath.Join(root, "path"), "initdb", "postgres")
	onlyInitdb := fakeBinaries(t, filepath.Join(root, "a"), "initdb")
	onlyPostgres := fakeBinaries(t, filepath.Join(root, "b"), "postgres")
	empty := t.TempDir()

	for _, tt := range []struct {
		name, path, glob string
		want             string // directory holding both
	}{
		{name: "newest version numerically", path: empty, glob: glob, want: filepath.Join(lib, "15", "bin")},
		{name: "PATH first", path: empty + string(os.PathListSeparator) + onPath, glob: glob, want: onPath},
		{name: "split PATH loses to an install", path: onlyInitdb + string(os.PathListSeparator) + onlyPostgres, glob: glob, want: filepath.Join(lib, "15", "bin")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := findBinaries(tt.path, tt.glob)
			require.NoError(t, err)
			require.Equal(t, binaries{initdb: filepath.Join(tt.want, "initdb"), postgres: filepath.Join(tt.want, "postgres")}, b)
		})
	}

	t.Run("split PATH as last resort", func(t *testing.T) {
		b, err := findBinaries(onlyInitdb+string(os.PathListSeparator)+onlyPostgres, filepath.Join(empty, "*", "bin"))
		require.NoError(t, err)
		require.Equal(t, binaries{initdb: filepath.Join(onlyInitdb, "initdb"), postgres: filepath.Join(onlyPostgres, "postgres")}, b)
	})

	t.Run("none", func(t *testing.T) {
		_, err := findBinaries(onlyInitdb, filepath.Join(empty, "*", "bin"))
		require.ErrorIs(t, err, ErrNoBinaries)
		require.ErrorContains(t, err, "apt-get install postgresql")
		require.ErrorContains(t, err, "PROJECTORD_TEST_DATABASE_URL")
	})
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]int{"15": {15}, "9.6": {9, 6}, "": nil, "15beta": nil, "1.-2": nil} {
		got, ok := parseVersion(in)
		require.Equal(t, want != nil, ok, in)
		require.Equal(t, want, got, in)
	}
}
