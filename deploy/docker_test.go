package deploy_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// instruction is one Dockerfile instruction.
type instruction struct{ cmd, args string }

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	f, err := os.Open("../Dockerfile")
	require.NoError(t, err)
	defer f.Close()
	var out []instruction
	var cont strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cont.WriteString(strings.TrimSuffix(line, `\`) + " ")
			continue
		}
		cont.WriteString(line)
		full := cont.String()
		cont.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
	}
	require.NoError(t, sc.Err())
	return out
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	ins := parseDockerfile(t)
	var froms, args []string
	last := map[string]string{} // instruction -> its last arguments
	var build string
	for _, i := range ins {
		switch i.cmd {
		case "FROM":
			froms = append(froms, i.args)
		case "ARG":
			name, _, _ := strings.Cut(i.args, "=")
			args = append(args, name)
		case "RUN":
			if strings.Contains(i.args, "go build") {
				build = i.args
			}
		}
		last[i.cmd] = i.args
	}

	// Build on the Go release go.mod asks for; run on distroless as nonroot.
	gomod, err := os.ReadFile("../go.mod")
	require.NoError(t, err)
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	require.NotNil(t, goVersion)
	require.Len(t, froms, 2, "multi-stage")
	require.Equal(t, "golang:"+string(goVersion[1])+"-bookworm AS build", froms[0])
	require.Equal(t, "gcr.io/distroless/static-debian12:nonroot", froms[1])
	// nonroot in distroless; numeric, or runAsNonRoot cannot verify it.
	require.Equal(t, "65532:65532", last["USER"])

	// Exec form, so SIGTERM reaches projectord rather than a shell.
	var entry, cmd []string
	require.NoError(t, json.Unmarshal([]byte(last["ENTRYPOINT"]), &entry))
	require.NoError(t, json.Unmarshal([]byte(last["CMD"]), &cmd))
	require.Equal(t, []string{"/projectord"}, entry)
	require.Equal(t, []string{"run"}, cmd)
	require.Equal(t, strconv.Itoa(defaultPort(t)), last["EXPOSE"])

	// The build matches `make build`: the Makefile's LDFLAGS with the
	// build arguments `make docker` passes.
	mk, err := os.ReadFile("../Makefile")
	require.NoError(t, err)
	ldflags := regexp.MustCompile(`(?m)^LDFLAGS\s*:=\s*(.+)$`).FindSubmatch(mk)
	require.NotNil(t, ldflags)
	want := regexp.MustCompile(`\$\((\w+)\)`).ReplaceAllString(string(ldflags[1]), `$${$1}`)
	require.Contains(t, build, `-ldflags "`+want+`"`)
	require.Contains(t, build, "CGO_ENABLED=0 go build -trimpath")
	require.Contains(t, build, "./cmd/projectord")
	passed := regexp.MustCompile(`--build-arg (\w+)=`).FindAllSubmatch(mk, -1)
	require.NotEmpty(t, passed, "the Makefile's docker target passes build arguments")
	for _, p := range passed {
		require.Contains(t, args, string(p[1]))
		require.Contains(t, build, "${"+string(p[1])+"}")
	}
	// The -X targets exist.
	version, err := os.ReadFile("../cmd/projectord/version.go")
	require.NoError(t, err)
	for _, x := range regexp.MustCompile(`-X main\.(\w+)=`).FindAllStringSubmatch(build, -1) {
		require.Regexp(t, `(?m)^\s*`+x[1]+`\s*=`, string(version), "main.%s", x[1])
	}
}

func TestDockerignoreKeepsTheModule(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../.dockerignore")
	require.NoError(t, err)
	var patterns []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	require.Contains(t, patterns, ".git")
	for _, keep := range []string{"go.mod", "go.sum", "cmd", "cmd/projectord/main.go", "internal", "internal/store/migrations"} {
		for _, p := range patterns {
			require.False(t, strings.HasPrefix(p, "!"), "no re-includes; keep the rules simple")
			ok, err := filepath.Match(strings.TrimPrefix(p, "**/"), keep)
			require.NoError(t, err)
			require.False(t, ok, "%s excludes %s", p, keep)
			require.False(t, strings.HasPrefix(keep, p+"/"), "%s excludes %s", p, keep)
		}
	}
}
