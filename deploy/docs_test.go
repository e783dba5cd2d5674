package deploy_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/metrics"
)

// The README and docs/architecture.md are what an operator and a newcomer
// read first; these tests hold them to the tree and to what the daemon
// exports, so a package or a metric added without its line fails here
// rather than going unnoticed.

// section returns the text of the Markdown section whose heading is
// heading (a whole line, "## Layout"), up to the next heading of the same
// or a higher level.
func section(t *testing.T, file, heading string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", file))
	require.NoError(t, err)
	level := strings.Index(heading, " ")
	lines := strings.Split(string(data), "\n")
	start := slices.Index(lines, heading)
	require.GreaterOrEqual(t, start, 0, "%s has no heading %q", file, heading)
	end := len(lines)
	for i := start + 1; i < len(lines); i++ {
		if h := strings.Index(lines[i], " "); h > 0 && h <= level && strings.Trim(lines[i][:h], "#") == "" {
			end = i
			break
		}
	}
	return strings.Join(lines[start:end], "\n")
}

// goDirs lists, relative to the repository root, every directory that
// holds Go files (node_modules and testdata aside).
func goDirs(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			rel, err := filepath.Rel("..", filepath.Dir(path))
			if err != nil {
				return err
			}
			seen[filepath.ToSlash(rel)] = true
		}
		return nil
	})
	require.NoError(t, err)
	var dirs []string
	for d := range seen {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	require.Contains(t, dirs, "internal/runner", "the walk must see the tree")
	return dirs
}

// names reports whether text names dir as a path in code spans: `dir` or
// `dir/…` (`configs/`, `deploy/*_test.go`).
func names(text, dir string) bool {
	return strings.Contains(text, "`"+dir+"`") || strings.Contains(text, "`"+dir+"/")
}

// pathSpan matches a code span that looks like a path of this repository.
var pathSpan = regexp.MustCompile("`((?:cmd|internal|examples|deploy|configs)/[A-Za-z0-9_./*-]*)`")

func TestLayoutNamesEveryPackage(t *testing.T) {
	t.Parallel()
	readme := section(t, "README.md", "## Layout")
	arch := section(t, "docs/architecture.md", "## Packages")
	for _, dir := range goDirs(t) {
		require.True(t, names(readme, dir), "README.md \"Layout\" does not name %s", dir)
		require.True(t, names(arch, dir), "docs/architecture.md \"Packages\" does not name %s", dir)
	}
}

func TestLayoutNamesOnlyWhatExists(t *testing.T) {
	t.Parallel()
	for file, heading := range map[string]string{"README.md": "## Layout", "docs/architecture.md": "## Packages"} {
		text := section(t, file, heading)
		spans := pathSpan.FindAllStringSubmatch(text, -1)
		require.NotEmpty(t, spans, "%s %q names no path", file, heading)
		for _, m := range spans {
			matches, err := filepath.Glob(filepath.Join("..", strings.TrimSuffix(m[1], "/")))
			require.NoError(t, err)
			require.NotEmpty(t, matches, "%s %q names %s, which is not in the tree", file, heading, m[1])
		}
	}
}

// recorder is a Registerer that keeps what is registered through it, so
// every family is seen, also those with no series yet (a Gather leaves out
// a vector with no children).
type recorder struct{ cs []prometheus.Collector }

func (r *recorder) Register(c prometheus.Collector) error   { r.cs = append(r.cs, c); return nil }
func (r *recorder) MustRegister(cs ...prometheus.Collector) { r.cs = append(r.cs, cs...) }
func (r *recorder) Unregister(c prometheus.Collector) bool  { return false }
func (r *recorder) descs() (fqNames []string) {
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range r.cs {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if m := re.FindStringSubmatch(d.String()); m != nil {
				fqNames = append(fqNames, m[1])
			}
		}
	}
	return fqNames
}

func TestReadmeDocumentsEveryMetric(t *testing.T) {
	t.Parallel()
	r := &recorder{}
	metrics.New(r, []string{"p"}, metrics.BuildInfo{Version: "v", Commit: "c", GoVersion: "go"})
	metrics.NewHTTP(r, []string{"p"})
	r.MustRegister(metrics.NewPoolCollector(nil))
	doc := section(t, "README.md", "## Metrics")
	var checked int
	for _, fq := range r.descs() {
		name, ok := strings.CutPrefix(fq, "projectord_")
		if !ok || strings.HasPrefix(name, "process_") {
			continue // the standard go_* and process collectors, documented as such
		}
		checked++
		require.True(t, strings.Contains(doc, "`"+name+"`"), "README.md \"Metrics\" does not document %s", fq)
	}
	// A guard on the walk: the families named in the alerts alone
	// are more than this.
	require.Greater(t, checked, 30, "the registry walk found too few families")
	require.Contains(t, doc, "`go_*`")
	require.Contains(t, doc, "`projectord_process_*`")
}
