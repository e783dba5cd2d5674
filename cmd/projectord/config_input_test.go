package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store/pgtest"
)

// TestConfigValidateRefusesValuesThatNeverSettle checks that the values
// which passed validation and then looped forever (issue #11, item 7) are
// each refused by `config validate` with its path, exit 2, and no password.
func TestConfigValidateRefusesValuesThatNeverSettle(t *testing.T) {
	t.Parallel()
	f := writeFile(t, "spin.yaml", `
database:
  url: 'postgres://app:s3cr3t-pw@db.example/app?pool_max_conns=x'
  query_timeout: 2562047h
source: {poll_interval: 1ns}
coordination:
  node_id: "node\0one"
  tcp_user_timeout: 2147484s
  heartbeat_interval: 1ns
  acquire_interval: 1ns
metrics: {refresh_interval: 1ns}
projectors:
  - name: orders
    sink: {sql: {target_url: 'postgres://app:s3cr3t-pw@db.example/read?default_query_exec_mode=x', handlers: {A: "SELECT 1"}}}
`)
	code, stdout, stderr := cli(t, "config", "validate", "--config", f)
	require.Equal(t, exitConfig, code, "stdout: %s\nstderr: %s", stdout, stderr)
	for _, want := range []string{
		"database.url: is not a valid PostgreSQL connection string: cannot parse pool_max_conns",
		"database.query_timeout: must be between 100ms and 24h0m0s",
		"source.poll_interval: must be between 5ms and 1m0s",
		`coordination.node_id: "node\x00one" must be 1 to 46 printable ASCII characters`,
		"coordination.tcp_user_timeout: must be between 1s and 596h31m23.647s",
		"coordination.heartbeat_interval: must be between 10ms and 1m0s",
		"coordination.acquire_interval: must be between 10ms and 1h0m0s",
		"metrics.refresh_interval: must be between 100ms and 1h0m0s",
		"projectors[0].sink.sql.target_url: is not a valid PostgreSQL connection string: invalid default_query_exec_mode",
	} {
		require.Contains(t, stderr, want)
	}
	require.Contains(t, stderr, "(9 problems)")
	require.NotContains(t, stderr, "s3cr3t-pw")
	require.NotContains(t, stderr, "\x00")
}

// TestConfigValidateFIFOURLFileExits2 checks that a named pipe as url_file
// is refused at once instead of blocking the process on open forever.
func TestConfigValidateFIFOURLFileExits2(t *testing.T) {
	t.Parallel()
	fifo := filepath.Join(t.TempDir(), "database_url")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	f := writeFile(t, "fifo.yaml", fmt.Sprintf("database: {url_file: '%s'}\n", fifo))

	p := startProc(t, "config", "validate", "--config", f)
	err := p.wait(t, 60*time.Second)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, exitConfig, ee.ExitCode(), p.out.String())
	require.Contains(t, p.out.String(), "database.url_file: cannot be read: "+fifo+" is a named pipe (FIFO); it must be a regular file")
}

// TestConfigLoaderBoundsExit2 checks the loader's bounds through the
// binary: a file over 1 MiB and one nested 2,000 deep (17 s, then "unknown
// key", on the original code) are refused at once with exit 2; 20,000
// unknown keys (minutes on the original code) list the first hundred.
func TestConfigLoaderBoundsExit2(t *testing.T) {
	t.Parallel()
	var keys strings.Builder
	keys.WriteString("database: {url: 'postgres://h/db'}\n")
	for i := range 20000 {
		fmt.Fprintf(&keys, "k%d: 1\n", i)
	}
	for name, tc := range map[string]struct{ doc, want string }{
		"large":   {"#" + strings.Repeat(" ", 1<<20) + "\n", "larger than 1048576 bytes"},
		"deep":    {strings.Repeat("a: {", 1999) + "a: 1" + strings.Repeat("}", 1999) + "\n", "nested more than 32 levels deep"},
		"unknown": {keys.String(), "invalid configuration (20000 problems):"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := writeFile(t, name+".yaml", tc.doc)
			p := startProc(t, "config", "validate", "--config", f)
			err := p.wait(t, 60*time.Second)
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee)
			require.Equal(t, exitConfig, ee.ExitCode(), p.out.String())
			out := p.out.String()
			require.Contains(t, out, tc.want)
			if name == "unknown" {
				require.Equal(t, 102, strings.Count(out, "\n"), "a header, 100 problems and a summary")
				require.Contains(t, out, "  … and 19900 more problems\n")
			}
		})
	}
}

// TestConfigValidateNamesTheRangeOfAWrongKind checks that a value of the
// wrong kind is answered with the key's range (issue #11, item 10).
func TestConfigValidateNamesTheRangeOfAWrongKind(t *testing.T) {
	t.Parallel()
	f := writeFile(t, "kind.yaml", "database: {url: 'postgres://h/db'}\ndefaults: {batch_size: abc}\n")
	code, _, stderr := cli(t, "config", "validate", "--config", f)
	require.Equal(t, exitConfig, code)
	require.Contains(t, stderr, "defaults.batch_size: must be a whole number between 1 and 10000\n")
}

// TestReadableURLFileIsAWarning checks that a url_file others can read is
// reported as a warning, on stderr for config validate and in the log for
// commands that log, and does not change the exit code (issue #11, item 10).
func TestReadableURLFileIsAWarning(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	secret := writeFile(t, "database_url", url+"\n")
	require.NoError(t, os.Chmod(secret, 0o644))
	f := writeFile(t, "w.yaml", fmt.Sprintf("database: {url_file: '%s'}\n", secret))

	code, stdout, stderr := cli(t, "config", "validate", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.Contains(t, stdout, "configuration OK")
	require.Contains(t, stderr, "warning: database.url_file: "+secret+" holds the database password and is readable by its group and others (mode 0644)")

	out, err := exec.Command(binary, "migrate", "--config", f).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), `"level":"warn"`)
	require.Contains(t, string(out), "is readable by its group and others (mode 0644)")

	require.NoError(t, os.Chmod(secret, 0o600))
	code, _, stderr = cli(t, "config", "validate", "--config", f)
	require.Equal(t, exitOK, code, stderr)
	require.NotContains(t, stderr, "warning")
}
