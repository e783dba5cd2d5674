package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrNoBinaries is returned by Start when the PostgreSQL server binaries
// cannot be found. Its message tells the user how to fix that.
var ErrNoBinaries = errors.New("PostgreSQL server binaries (initdb, postgres) not found on PATH " +
	"or under " + debianBinGlob + ": install them with `apt-get install postgresql` (Debian/Ubuntu), " +
	"or set PROJECTORD_TEST_DATABASE_URL to the URL of an existing PostgreSQL server")

// minMajorVersion is the oldest server we support: the initdb flags we pass
// and DROP DATABASE ... WITH (FORCE) need PostgreSQL 13.
const minMajorVersion = 13

// debianBinGlob is where Debian and Ubuntu install the server binaries, one
// directory per major version. None of them is on PATH by default there.
const debianBinGlob = "/usr/lib/postgresql/*/bin"

// binaries are the server programs we run. pg_ctl is not among them: we
// start postgres ourselves so that it stays our child and dies with us.
type binaries struct {
	initdb   string
	postgres string
}

// findBinaries looks on PATH first, so that a developer's own build or
// version choice wins, then falls back to the newest Debian-style install.
func findBinaries(path, debianGlob string) (binaries, error) {
	initdb, errInitdb := lookPath("initdb", path)
	postgres, errPostgres := lookPath("postgres", path)
	onPath := errInitdb == nil && errPostgres == nil
	// initdb runs the postgres binary that sits next to its own resolved
	// path, so a pair from two different directories could mix versions.
	if onPath && sameDir(initdb, postgres) {
		return binaries{initdb: initdb, postgres: postgres}, nil
	}
	if b, ok := newestInstalled(debianGlob); ok {
		return b, nil
	}
	if onPath {
		return binaries{initdb: initdb, postgres: postgres}, nil
	}
	return binaries{}, ErrNoBinaries
}

// lookPath is exec.LookPath against an explicit PATH value, so that tests do
// not have to modify the process environment.
func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

func sameDir(a, b string) bool {
	if filepath.Dir(a) == filepath.Dir(b) {
		return true
	}
	ra, errA := filepath.EvalSymlinks(a)
	rb, errB := filepath.EvalSymlinks(b)
	return errA == nil && errB == nil && filepath.Dir(ra) == filepath.Dir(rb)
}

// newestInstalled picks the highest version directory matching glob (whose
// second-to-last element is the version, as in /usr/lib/postgresql/15/bin).
// Versions compare numerically: 15 > 9.6.
func newestInstalled(glob string) (binaries, bool) {
	dirs, _ := filepath.Glob(glob) // the only possible error is a malformed pattern
	type candidate struct {
		version []int
		dir     string
	}
	var candidates []candidate
	for _, dir := range dirs {
		v, ok := parseVersion(filepath.Base(filepath.Dir(dir)))
		if !ok {
			continue
		}
		if isExecutable(filepath.Join(dir, "initdb")) && isExecutable(filepath.Join(dir, "postgres")) {
			candidates = append(candidates, candidate{version: v, dir: dir})
		}
	}
	if len(candidates) == 0 {
		return binaries{}, false
	}
	best := slices.MaxFunc(candidates, func(a, b candidate) int { return slices.Compare(a.version, b.version) })
	return binaries{
		initdb:   filepath.Join(best.dir, "initdb"),
		postgres: filepath.Join(best.dir, "postgres"),
	}, true
}

// parseVersion turns "9.6" into [9 6]; anything that is not dot-separated
// numbers is rejected.
func parseVersion(s string) ([]int, bool) {
	parts := strings.Split(s, ".")
	v := make([]int, len(parts))
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, false
		}
		v[i] = n
	}
	return v, true
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// serverMajorVersion asks the postgres binary for its version, so that an
// unsupported server fails here with a clear message rather than later with
// a syntax error.
func serverMajorVersion(ctx context.Context, postgres string) (int, error) {
	out, err := exec.CommandContext(ctx, postgres, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("error running %s --version: %w", postgres, err)
	}
	m := versionRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("error parsing version of %s from %q", postgres, strings.TrimSpace(string(out)))
	}
	major, _ := strconv.Atoi(string(m[1]))
	if major < minMajorVersion {
		return 0, fmt.Errorf("%s is PostgreSQL %d; version %d or newer is required", postgres, major, minMajorVersion)
	}
	return major, nil
}
