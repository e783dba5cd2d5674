package pgcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Options configure Start. The zero value gives a fast, throwaway server on
// a free port.
type Options struct {
	// Logger receives lifecycle messages; the server's own log goes to a
	// file in the cluster directory. Default: a no-op logger, because tests
	// rarely want them.
	Logger *zap.Logger

	// Durable keeps PostgreSQL's crash-safety settings. Default false:
	// fsync, synchronous_commit and full_page_writes are off, because the
	// data is thrown away anyway and tests would otherwise spend much of
	// their time waiting for the disk. Tests that kill PostgreSQL and count
	// what survived must set it: without synchronous_commit, committed
	// transactions may be lost when the server dies.
	Durable bool

	// Port is the TCP port to listen on at 127.0.0.1. Default 0: a free
	// port, so that parallel test binaries never collide.
	Port int

	// Settings are extra server settings, passed as -c name=value. They
	// override the defaults.
	Settings map[string]string
}

const (
	// superuser is the role initdb creates; trust authentication lets it
	// connect without a password, which is fine on a loopback-only server.
	superuser   = "postgres"
	dataDirName = "data"
	logFileName = "postgres.log"

	// readyTimeout bounds startup, including crash recovery after a kill.
	readyTimeout = 30 * time.Second
	// stopTimeout bounds a fast shutdown before we resort to SIGKILL. It
	// covers the shutdown checkpoint, which takes a while on a durable
	// cluster with many dirty buffers.
	stopTimeout  = 30 * time.Second
	pollInterval = 25 * time.Millisecond
	// portAttempts bounds retries when another process grabs the free port
	// we picked before postgres could bind it.
	portAttempts = 5
	// logTailBytes is how much of the server log goes into an error.
	logTailBytes = 2048
)

// ErrClosed is returned when starting a cluster that has been closed.
var ErrClosed = errors.New("cluster is closed")

// errPortInUse marks a start that failed because the port was taken.
var errPortInUse = errors.New("port already in use")

// errOldBackends marks a start that failed because backends of a killed
// postmaster still hold its shared memory. They exit on their own as soon
// as they notice their postmaster is gone.
var errOldBackends = errors.New("backends of the previous server still running")

// Cluster is a PostgreSQL server in a temporary directory. Its methods are
// safe for concurrent use.
type Cluster struct {
	logger   *zap.Logger
	bins     binaries
	cred     *syscall.Credential // nil: run as ourselves
	rootDir  string              // holds the data directory, the socket and the log
	settings []string            // name=value, sorted so that runs are reproducible
	port     int                 // fixed once Start returns

	mu     sync.Mutex // serialises Start, Stop and Close
	proc   *process   // nil while stopped
	closed bool
}

// Start creates a cluster in a new temporary directory and starts its
// server. The server keeps running after ctx ends; ctx bounds only the
// startup. Call Close to stop it and remove its files.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	logger = logger.Named("pgcluster")

	bins, err := findBinaries(os.Getenv("PATH"), debianBinGlob)
	if err != nil {
		return nil, err
	}
	major, err := serverMajorVersion(ctx, bins.postgres)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}

	tmp := os.TempDir()
	sweepStaleDirs(logger, tmp)
	dir, err := os.MkdirTemp(tmp, ownedDirPattern(os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("error creating cluster directory: %w", err)
	}
	// postgres reports its data directory as an absolute path; ours must
	// compare equal to it (see ping). $TMPDIR may be relative.
	rootDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("error creating cluster directory: %w", err), os.RemoveAll(dir))
	}

	c := &Cluster{
		logger:   logger.With(zap.String("dir", rootDir)),
		bins:     bins,
		cred:     cred,
		rootDir:  rootDir,
		settings: serverSettings(opts),
	}
	c.logger.Debug("creating cluster", zap.String("postgres", bins.postgres), zap.Int("version", major))
	if err := c.create(ctx, opts.Port); err != nil {
		if closeErr := c.Close(); closeErr != nil {
			c.logger.Warn("error cleaning up after failed start", zap.Error(closeErr))
		}
		return nil, err
	}
	return c, nil
}

// serverSettings returns opts' server settings on top of ours.
func serverSettings(opts Options) []string {
	s := map[string]string{
		"listen_addresses": "127.0.0.1",
		// Parallel tests, each with its own pool, add up quickly.
		"max_connections":  "300",
		"shared_buffers":   "128MB",
		"log_min_messages": "warning",
	}
	if !opts.Durable {
		s["fsync"] = "off"
		s["synchronous_commit"] = "off"
		s["full_page_writes"] = "off"
	}
	maps.Copy(s, opts.Settings)
	var out []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		out = append(out, k+"="+s[k])
	}
	return out
}

// create runs initdb and the first start. With an automatic port it retries
// on a new port when another process took ours before postgres bound it.
func (c *Cluster) create(ctx context.Context, port int) error {
	if err := c.initdb(ctx); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 1; ; attempt++ {
		c.port = port
		if c.port == 0 {
			p, err := freePort()
			if err != nil {
				return err
			}
			c.port = p
		}
		err := c.startLocked(ctx)
		if err == nil || port != 0 || !errors.Is(err, errPortInUse) || attempt == portAttempts {
			return err
		}
		c.logger.Debug("port taken before postgres could bind it; retrying", zap.Int("port", c.port))
	}
}

func (c *Cluster) initdb(ctx context.Context) error {
	log, offset, err := c.openLog()
	if err != nil {
		return err
	}
	defer log.Close()
	if err := chownTree(c.rootDir, c.cred); err != nil {
		return fmt.Errorf("error preparing cluster directory: %w", err)
	}
	cmd := exec.CommandContext(ctx, c.bins.initdb,
		"--pgdata="+c.DataDir(),
		"--username="+superuser,
		"--auth=trust",
		"--encoding=UTF8",
		"--locale=C",
		// Skips flushing some 40 MB to disk. Durable clusters don't need
		// the flush either: it guards against a machine crash, after which
		// a temporary directory is worthless anyway.
		"--no-sync",
	)
	c.prepare(cmd, log)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("error running initdb: %w%s", err, c.logTail(offset))
	}
	return nil
}

// prepare sets what initdb and postgres share: working directory, output
// and an environment free of variables that would change their behaviour.
func (c *Cluster) prepare(cmd *exec.Cmd, log *os.File) {
	// Our own working directory may be unreadable for the server's user.
	cmd.Dir = c.rootDir
	cmd.Stdout = log
	cmd.Stderr = log
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG")
	})
	// English messages, which startLocked searches for a port conflict.
	cmd.Env = append(env, "LC_ALL=C")
}

// Start starts the server of a stopped cluster again, on the same data
// directory and port. It does nothing if the server is running. After the
// server was killed, it waits for the old backends to exit first.
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.proc != nil {
		if !c.proc.exited() {
			return nil
		}
		// Killed behind our back, most likely by a test.
		c.proc = nil
	}
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		err := c.startLocked(ctx)
		if !errors.Is(err, errOldBackends) {
			return err
		}
		c.logger.Debug("waiting for backends of the killed server to exit")
		timer.Reset(pollInterval)
		select {
		case <-ctx.Done():
			return err
		case <-timer.C:
		}
	}
}

func (c *Cluster) startLocked(ctx context.Context) error {
	log, offset, err := c.openLog()
	if err != nil {
		return err
	}
	args := []string{"-D", c.DataDir(), "-p", strconv.Itoa(c.port), "-k", c.rootDir}
	for _, s := range c.settings {
		args = append(args, "-c", s)
	}
	// Not CommandContext: ctx bounds the startup, not the server's life.
	cmd := exec.Command(c.bins.postgres, args...)
	c.prepare(cmd, log)
	cmd.SysProcAttr = serverProcAttr(c.cred)

	began := time.Now()
	p, err := spawn(cmd)
	log.Close() // the child has its own copy
	if err != nil {
		return fmt.Errorf("error starting postgres: %w", err)
	}
	if err := c.waitReady(ctx, p, offset); err != nil {
		p.kill()
		return fmt.Errorf("error starting postgres on port %d: %w", c.port, err)
	}
	c.proc = p
	c.logger.Info("postgres started", zap.Int("port", c.port), zap.Int("pid", p.pid()),
		zap.Duration("took", time.Since(began)))
	return nil
}

// waitReady polls until the server accepts connections, fails, or the
// startup deadline passes. The server's log from logOffset on explains
// failures.
func (c *Cluster) waitReady(ctx context.Context, p *process, logOffset int64) error {
	ctx, cancel := context.WithTimeoutCause(ctx, readyTimeout,
		fmt.Errorf("postgres did not accept connections within %s", readyTimeout))
	defer cancel()
	// A server that exited will never answer, so its exit also cancels the
	// attempt in flight: after losing the port to a process that accepts but
	// never replies, that attempt would otherwise wait out its own timeout.
	attemptCtx, cancelAttempts := context.WithCancel(ctx)
	defer cancelAttempts()
	go func() {
		select {
		case <-p.done:
			cancelAttempts()
		case <-attemptCtx.Done():
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	var lastErr error
	for {
		select {
		case <-attemptCtx.Done():
			if p.exited() {
				return c.exitError(p, logOffset)
			}
			return fmt.Errorf("%w (last attempt: %v)%s", context.Cause(ctx), lastErr, c.logTail(logOffset))
		case <-timer.C:
		}
		if lastErr = c.ping(attemptCtx); lastErr == nil {
			return nil
		}
		timer.Reset(pollInterval)
	}
}

// ping connects the way clients will and checks that it reached this
// cluster's server: after losing the race for a free port, the port may
// belong to somebody else's PostgreSQL.
func (c *Cluster) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var dir string
	if err := conn.QueryRow(ctx, "SHOW data_directory").Scan(&dir); err != nil {
		return err
	}
	if dir != c.DataDir() {
		return fmt.Errorf("port %d is served by another server (data directory %s)", c.port, dir)
	}
	return nil
}

// exitError explains why the server exited during startup.
func (c *Cluster) exitError(p *process, logOffset int64) error {
	log := c.readLog(logOffset)
	err := fmt.Errorf("postgres exited during startup (%v)%s", p.err, tail(log))
	// The port was free when we picked it; someone took it since.
	if strings.Contains(log, "Address already in use") {
		return fmt.Errorf("%w: %w", errPortInUse, err)
	}
	if strings.Contains(log, "pre-existing shared memory block") {
		return fmt.Errorf("%w: %w", errOldBackends, err)
	}
	return err
}

// Stop shuts the server down and waits until it has exited. It asks for a
// fast shutdown, which disconnects clients and rolls back their
// transactions; if that takes longer than ctx allows (at most 30s), it kills
// the server. Either way the server is gone when Stop returns. Stopping a
// stopped cluster does nothing.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(ctx)
}

func (c *Cluster) stopLocked(ctx context.Context) error {
	p := c.proc
	if p == nil {
		return nil
	}
	c.proc = nil
	if p.exited() {
		c.logger.Info("postgres had already exited", zap.Int("pid", p.pid()), zap.NamedError("exit", p.err))
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown. Its default smart shutdown
	// (SIGTERM) waits for every client to disconnect, which a connection
	// pool never does.
	if err := p.signal(syscall.SIGINT); err != nil {
		p.kill()
		return fmt.Errorf("error stopping postgres: %w", err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, stopTimeout,
		fmt.Errorf("postgres still running %s after fast shutdown request", stopTimeout))
	defer cancel()
	select {
	case <-p.done:
		c.logger.Info("postgres stopped", zap.Int("pid", p.pid()))
		return nil
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("error stopping postgres, killed it instead: %w", context.Cause(ctx))
	}
}

// Close stops the server and removes the cluster's directory, along with
// any left behind by dead processes. It is safe to call more than once;
// later calls do nothing.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	errStop := c.stopLocked(context.Background())
	var errRemove error
	if err := os.RemoveAll(c.rootDir); err != nil {
		errRemove = fmt.Errorf("error removing cluster directory: %w", err)
	}
	// Clean up after crashed test binaries now rather than at the next
	// Start, so that a finished test run leaves nothing behind.
	sweepStaleDirs(c.logger, filepath.Dir(c.rootDir))
	return errors.Join(errStop, errRemove)
}

// URL returns the connection URL of database db as the superuser.
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(superuser),
		Host:     "127.0.0.1:" + strconv.Itoa(c.port),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on at 127.0.0.1. It stays
// the same across Stop and Start.
func (c *Cluster) Port() int { return c.port }

// DataDir returns the server's data directory.
func (c *Cluster) DataDir() string { return filepath.Join(c.rootDir, dataDirName) }

// PID returns the postmaster's process id, or 0 when the server is not
// running. Failure tests use it to kill or pause the server.
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.proc.exited() {
		return 0
	}
	return c.proc.pid()
}

func (c *Cluster) logPath() string { return filepath.Join(c.rootDir, logFileName) }

// openLog opens the server log for appending and returns where this run's
// output will begin, so that errors quote only what this run wrote.
func (c *Cluster) openLog() (*os.File, int64, error) {
	f, err := os.OpenFile(c.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("error opening server log: %w", err)
	}
	offset, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("error opening server log: %w", err)
	}
	return f, offset, nil
}

// readLog returns the server log from offset on, or "" if unreadable: it
// only ever decorates another error.
func (c *Cluster) readLog(offset int64) string {
	f, err := os.Open(c.logPath())
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<20))
	return string(b)
}

func (c *Cluster) logTail(offset int64) string { return tail(c.readLog(offset)) }

// tail formats the end of a log for appending to an error message.
func tail(log string) string {
	log = strings.TrimSpace(log)
	if log == "" {
		return ""
	}
	if len(log) > logTailBytes {
		log = "…" + log[len(log)-logTailBytes:]
	}
	return "\nserver log:\n" + log
}
