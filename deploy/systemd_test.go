package deploy_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
)

// unitFile is a parsed systemd unit: section -> key -> values in order.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	u := unitFile{}
	var section string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			require.NotEmpty(t, section, "%s:%d: outside a section", path, n)
			require.False(t, strings.HasSuffix(line, `\`), "%s:%d: keep settings on one line", path, n)
			k, v, ok := strings.Cut(line, "=")
			require.True(t, ok, "%s:%d: %q", path, n, line)
			u[section][strings.TrimSpace(k)] = append(u[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	require.NoError(t, sc.Err())
	return u
}

// one returns the single value of key in [Service] (or another section).
func (u unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	require.Len(t, vs, 1, "[%s] %s", section, key)
	return vs[0]
}

// env returns the unit's Environment= assignments.
func (u unitFile) env() map[string]string {
	out := map[string]string{}
	for _, line := range u["Service"]["Environment"] {
		for _, a := range strings.Fields(line) {
			k, v, _ := strings.Cut(strings.Trim(a, `"`), "=")
			out[k] = v
		}
	}
	return out
}

const unitPath = "systemd/projectord.service"

func TestSystemdUnitLifecycle(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, unitPath)
	svc := func(k string) string { return u.one(t, "Service", k) }
	require.Equal(t, "notify", svc("Type"), "projectord sends READY=1 (internal/sdnotify)")
	require.Equal(t, "main", svc("NotifyAccess"))
	watchdog, err := time.ParseDuration(svc("WatchdogSec"))
	require.NoError(t, err)
	require.Positive(t, watchdog)
	require.Equal(t, "on-failure", svc("Restart"))
	_, err = time.ParseDuration(svc("RestartSec"))
	require.NoError(t, err)
	require.Equal(t, "2", svc("RestartPreventExitStatus"), "exit 2 is a bad configuration (README)")
	// Go exits 2 after a panic and after SIGABRT (the watchdog's signal)
	// too; GOTRACEBACK=crash makes those die by signal, so they restart.
	require.Equal(t, "crash", u.env()["GOTRACEBACK"])
	require.Equal(t, "0", svc("LimitCORE"), "no core dump of a process holding the password")
	require.Equal(t, "SIGTERM", svc("KillSignal"))

	stop, err := time.ParseDuration(svc("TimeoutStopSec"))
	require.NoError(t, err)
	require.Greater(t, stop, config.Default().ShutdownTimeout)
	cfg := loadShippedConfig(t, "systemd/projectord.yaml", map[string]string{"PROJECTORD_DATABASE_URL_FILE": urlFile(t)})
	require.Greater(t, stop, cfg.ShutdownTimeout, "systemd/projectord.yaml's shutdown_timeout")
}

func urlFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "database-url")
	require.NoError(t, os.WriteFile(p, []byte(testURL+"\n"), 0o600))
	return p
}

func TestSystemdUnitRunsTheSampleConfig(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, unitPath)
	exec := strings.Fields(u.one(t, "Service", "ExecStart"))
	require.Equal(t, []string{"/usr/local/bin/projectord", "run", "--config", "/etc/projectord/projectord.yaml"}, exec)
	require.Contains(t, config.DefaultLookPaths(), exec[3])

	// The credential's name is the file PROJECTORD_DATABASE_URL_FILE names
	// in the credentials directory (%d).
	name, src, ok := strings.Cut(u.one(t, "Service", "LoadCredential"), ":")
	require.True(t, ok)
	require.Equal(t, "database-url", name)
	require.Equal(t, "/etc/projectord/database-url", src)
	require.Equal(t, "%d/"+name, u.env()["PROJECTORD_DATABASE_URL_FILE"])

	// With that variable, and nothing else, the sample configuration is
	// valid and reads the URL from the credential.
	cfg := loadShippedConfig(t, "systemd/projectord.yaml", map[string]string{"PROJECTORD_DATABASE_URL_FILE": urlFile(t)})
	require.Equal(t, testURL, cfg.Database.URL)
	require.Equal(t, config.Default().HTTP.Listen, cfg.HTTP.Listen)
	require.NotEmpty(t, cfg.Projectors, "`run` refuses a configuration without projectors")
}

func TestSystemdUnitHardening(t *testing.T) {
	t.Parallel()
	u := parseUnit(t, unitPath)
	for k, want := range map[string]string{
		"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
		"ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
		"RestrictNamespaces": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
		"RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "SystemCallArchitectures": "native",
		"CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
	} {
		require.Equal(t, want, u.one(t, "Service", k), k)
	}
	require.Contains(t, u["Service"]["SystemCallFilter"], "@system-service")
	// The process collector reads /proc/stat; hiding it fails every scrape.
	require.NotContains(t, u["Service"], "ProcSubset")
}

// TestSystemdAnalyzeVerify runs `systemd-analyze verify` on the unit when
// systemd-analyze is installed, with ExecStart pointed at an executable that
// exists (verify checks it). Verify reports problems as warnings with exit
// status 0, so any output fails the test.
func TestSystemdAnalyzeVerify(t *testing.T) {
	t.Parallel()
	analyze := requireTool(t, "systemd-analyze", false)
	b, err := os.ReadFile(unitPath)
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	unit := strings.Replace(string(b), "ExecStart=/usr/local/bin/projectord ", "ExecStart="+self+" ", 1)
	require.NotEqual(t, string(b), unit)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "projectord.service"), []byte(unit), 0o644))
	out := runTool(t, dir, analyze, "verify", "./projectord.service")
	require.Empty(t, strings.TrimSpace(out))
}
