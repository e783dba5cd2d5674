package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/projectord/projectord/configs"
	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/daemon"
	"github.com/projectord/projectord/internal/demo"
	"github.com/projectord/projectord/internal/store/pgcluster"
)

const (
	// devDatabase is the database dev creates in its throw-away cluster.
	devDatabase = "demo"
	// devStatusEvery is how often dev prints its status lines.
	devStatusEvery = time.Second
	// devCatchUp bounds how long dev waits, once the generator has
	// stopped, for the projectors to apply the last events so that it can
	// check the read models. A second Ctrl-C skips the wait.
	devCatchUp = 10 * time.Second
	// devMaxWriters bounds --writers: each writer holds a connection.
	devMaxWriters = 64
)

// devOptions are the flags of `projectord dev`.
type devOptions struct {
	databaseURL string
	rate        float64
	writers     int
	notify      bool
	duration    time.Duration
	httpSink    bool
}

func newDevCmd(e *env, g *globalFlags) *cobra.Command {
	var o devOptions
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "See projectord work: a throw-away PostgreSQL, a live e-commerce event stream and three projectors",
		Long: `Start a throw-away PostgreSQL (the server binaries must be installed; nothing
needs to be running, and as root it runs as the postgres user), create an
events table in the native layout and the read models of configs/dev.yaml,
append a live e-commerce stream (orders placed, items added, payments
captured, shipments dispatched) from several concurrent writers, and run the
projectors of configs/dev.yaml on it. Serves /metrics and /status on
http.listen and prints every projector's state, position, lag and
throughput once a second.

Ctrl-C (or --duration) stops the writers, waits for the projectors to apply
the last events, checks every read model against the events table, stops the
projectors and removes the cluster. A second Ctrl-C skips the wait.

With --database-url, dev uses that database instead: it creates whichever
demo table is missing, refuses to write into a table of the same name that
it did not create, and drops nothing. PROJECTORD_* environment variables and
--config are ignored: a shell set up for production must not point the
demo's writers at a real database.

With --http-sink, dev also runs the example webhook receiver
(examples/webhookreceiver) on loopback and a fourth projector, ` + devWebhookProjector + `,
that delivers every event to it through the HTTP sink, signed with a
throw-away secret; it prints each delivery the receiver accepts.`,
		Example: `  projectord dev
  projectord dev --rate 2000 --writers 8 --notify
  projectord dev --duration 30s --http.listen 127.0.0.1:9000
  projectord dev --database-url postgres://me@localhost/scratch
  projectord dev --http-sink`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(cmd.Flags(), g); err != nil {
				return err
			}
			return runDev(cmd.Context(), e, cmd.Flags(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.databaseURL, "database-url", "", "use this database instead of a throw-away cluster (creates the demo tables if missing, drops nothing)")
	f.Float64Var(&o.rate, "rate", 200, "events per second, all writers together; 0 = as fast as they can")
	f.IntVar(&o.writers, "writers", 4, "concurrent writers, each appending one event per transaction")
	f.BoolVar(&o.notify, "notify", false, "install the opt-in NOTIFY trigger (source prepare --notify) and set source.listen")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long, as if Ctrl-C was pressed; 0 = until Ctrl-C")
	f.BoolVar(&o.httpSink, "http-sink", false, "also run the example webhook receiver on loopback and a projector delivering to it (sink.http)")
	f.String("http.listen", "", `address of /metrics and /status (default ":7464", from configs/dev.yaml; "" disables)`)
	return cmd
}

// check rejects bad flags before anything starts.
func (o *devOptions) check(flags *pflag.FlagSet, g *globalFlags) error {
	if g.config != "" {
		return &usageError{msg: "dev runs the projectors of configs/dev.yaml and takes no --config; run your own with `projectord run`"}
	}
	// The global --database.url is as explicit as --database-url; the
	// environment variable is not (see the command's help).
	if f := flags.Lookup("database.url"); f != nil && f.Changed {
		if o.databaseURL != "" && o.databaseURL != f.Value.String() {
			return &usageError{msg: "--database-url and --database.url differ; give one"}
		}
		o.databaseURL = f.Value.String()
	}
	switch {
	case o.rate < 0:
		return &usageError{msg: fmt.Sprintf("--rate must be 0 (as fast as possible) or positive, not %g", o.rate)}
	case o.writers < 1 || o.writers > devMaxWriters:
		return &usageError{msg: fmt.Sprintf("--writers must be between 1 and %d, not %d", devMaxWriters, o.writers)}
	case o.duration < 0:
		return &usageError{msg: fmt.Sprintf("--duration must not be negative, not %s", o.duration)}
	}
	return nil
}

// devConfig loads the embedded configs/dev.yaml with dev's flags on top:
// --http.listen and the global --log.* and --database.url flags bind to
// their keys as in every command, and --database-url and --notify, which
// mean more than a key, set theirs as overrides. All are validated like any
// other value; the real environment is not read.
func devConfig(flags *pflag.FlagSet, o devOptions) (*config.Config, error) {
	set := map[string]any{}
	if o.databaseURL != "" {
		set["database.url"] = o.databaseURL
	}
	if o.notify {
		set["source.listen"] = true
	}
	cfg, err := config.Load(config.LoadOptions{Content: configs.Dev, Flags: flags, Overrides: set, Env: config.NoEnv})
	if err != nil {
		if _, ok := err.(*config.ValidationError); ok {
			return nil, err
		}
		return nil, &configError{err: fmt.Errorf("configs/dev.yaml: %w", err)}
	}
	return cfg, nil
}

// devSession is one run of `projectord dev`: what it started, so that it
// can stop it again in reverse order.
type devSession struct {
	o   devOptions
	cfg *config.Config
	log *zap.Logger
	out io.Writer

	cluster *pgcluster.Cluster // nil with --database-url
	pool    *pgxpool.Pool      // the generator's and the check's
	app     *app
	gen     *demo.Generator
	status  *devStatus
	webhook *devWebhook // nil without --http-sink
}

func runDev(ctx context.Context, e *env, flags *pflag.FlagSet, o devOptions) (err error) {
	cfg, err := devConfig(flags, o)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log.Format, cfg.Log.Level, e.stderr)
	if err != nil {
		return &configError{err: err}
	}
	defer func() { _ = log.Sync() }()
	sig := watchDevSignals(ctx)
	defer sig.release()

	s := &devSession{o: o, cfg: cfg, log: log, out: e.stdout}
	defer func() {
		budget, cancel := context.WithTimeout(sig.hurry, cfg.ShutdownTimeout)
		defer cancel()
		err = errors.Join(err, s.close(budget))
	}()
	if err := s.start(sig.run); err != nil {
		if sig.received() != nil {
			return nil // Ctrl-C while starting: a normal stop
		}
		return err
	}
	reason, fatal := s.follow(sig.run, sig)
	if c := s.app.daemon.Cause(); fatal == nil && c != nil && !errors.Is(c, daemon.ErrStopped) {
		fatal = c // it failed as the wait ended another way
	}
	if fatal != nil {
		fmt.Fprintf(s.out, "stopping: %s\n", oneLine(fatal.Error()))
		return &configError{err: fatal}
	}
	s.finish(sig.hurry, reason)
	return nil
}

// start brings up the database, the demo tables, the daemon and the
// generator, and prints where to look.
func (s *devSession) start(ctx context.Context) error {
	url := s.o.databaseURL
	if url == "" {
		fmt.Fprintln(s.out, "starting a throw-away PostgreSQL…")
		c, err := pgcluster.Start(ctx, pgcluster.Options{Logger: s.log})
		if err != nil {
			return err
		}
		s.cluster = c
		if err := c.CreateDatabase(ctx, devDatabase, ""); err != nil {
			return err
		}
		url = c.URL(devDatabase)
		s.cfg.Database.URL = url // well-formed by construction
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return &configError{err: fmt.Errorf("--database-url: %s", config.RedactURL(err.Error()))}
	}
	pc.MaxConns = int32(s.o.writers + 2)
	pc.ConnConfig.ConnectTimeout = s.cfg.Database.ConnectTimeout
	pc.ConnConfig.RuntimeParams["application_name"] = "projectord dev generator"
	s.pool, err = pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return err
	}
	created, err := demo.Setup(ctx, s.pool, demo.SetupOptions{Notify: s.o.notify, Channel: s.cfg.Source.NotifyChannel})
	if errors.Is(err, demo.ErrForeignTable) {
		return &configError{err: err}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", config.RedactURL(url), err)
	}
	if len(created) > 0 {
		s.log.Info("created demo tables", zap.Strings("tables", created))
	}
	if s.o.httpSink {
		if s.webhook, err = startDevWebhook(s.cfg, s.out); err != nil {
			return err
		}
	}
	s.app, err = startApp(ctx, s.cfg, s.log, true)
	if err != nil {
		if s.cfg.HTTP.Listen != "" && strings.Contains(err.Error(), "http.listen") {
			return fmt.Errorf("%w (choose another address with --http.listen)", err)
		}
		return err
	}
	s.gen, err = demo.NewGenerator(s.pool, demo.Options{Rate: s.o.rate, Writers: s.o.writers,
		QueryTimeout: s.cfg.Database.QueryTimeout, Logger: s.log.Named("generator")})
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	s.status = newDevStatus(s.out, time.Now())
	if err := s.gen.Start(ctx); err != nil {
		return err
	}
	s.banner(url)
	return nil
}

// banner says what runs where and what to look at.
func (s *devSession) banner(url string) {
	w := s.out
	shown := config.RedactURL(url)
	if s.cluster != nil {
		fmt.Fprintf(w, "PostgreSQL  %s  (throw-away, in %s; removed on exit)\n", shown, filepath.Dir(s.cluster.DataDir()))
	} else {
		fmt.Fprintf(w, "PostgreSQL  %s  (yours: demo tables are created if missing, nothing is dropped)\n", shown)
	}
	fmt.Fprintf(w, "query it    psql '%s' -c 'SELECT * FROM order_totals ORDER BY updated_at DESC LIMIT 5'\n", shown)
	if s.app.srv != nil {
		base := "http://" + browsable(s.app.srv.Addr())
		fmt.Fprintf(w, "metrics     %s/metrics\nstatus      %s/status\n", base, base)
	}
	rate := fmt.Sprintf("~%g events/s", s.o.rate)
	if s.o.rate == 0 {
		rate = "as fast as possible"
	}
	names := make([]string, len(s.cfg.Projectors))
	for i, p := range s.cfg.Projectors {
		names[i] = p.Name
	}
	fmt.Fprintf(w, "writing     %s from %d writers into %s; projectors: %s\n", rate, s.o.writers, demo.EventsTable, strings.Join(names, ", "))
	if s.o.notify {
		fmt.Fprintf(w, "notify      trigger installed; projectors LISTEN on %s\n", s.cfg.Source.NotifyChannel)
	}
	if s.webhook != nil {
		fmt.Fprintf(w, "webhook     %s receives %s's batches (signed, deduplicated by a set of positions)\n", s.webhook.url, devWebhookProjector)
	}
	stop := "Ctrl-C"
	if s.o.duration > 0 {
		stop = fmt.Sprintf("Ctrl-C (or --duration %s)", s.o.duration)
	}
	fmt.Fprintf(w, "%s stops the writers, checks the read models against the events and cleans up.\n\n", stop)
}

// browsable turns a listening address into one a browser can open.
func browsable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// follow prints the status lines until a signal, --duration or a fatal
// daemon error. It returns why it stopped.
func (s *devSession) follow(ctx context.Context, sig *devSignals) (reason string, fatal error) {
	tick := time.NewTicker(devStatusEvery)
	defer tick.Stop()
	var deadline <-chan time.Time
	if s.o.duration > 0 {
		t := time.NewTimer(s.o.duration)
		defer t.Stop()
		deadline = t.C
	}
	for {
		select {
		case now := <-tick.C:
			s.status.print(now, s.app.daemon.Snapshot(), s.gen.Stats())
		case <-deadline:
			return fmt.Sprintf("--duration %s is up", s.o.duration), nil
		case <-ctx.Done():
			if sg := sig.received(); sg != nil {
				return signalName(sg), nil
			}
			return context.Cause(ctx).Error(), nil
		case <-s.app.daemon.Done():
			return "", s.app.daemon.Cause()
		}
	}
}

// signalName is SIGINT or SIGTERM, as the user knows them.
func signalName(sig os.Signal) string {
	if sig == os.Interrupt {
		return "SIGINT"
	}
	return "SIGTERM"
}

// finish stops the generator, waits for the projectors to apply the last
// events and checks the read models against the events table.
func (s *devSession) finish(hurry context.Context, reason string) {
	s.gen.Stop()
	stopped := time.Now()
	st := s.gen.Stats()
	fmt.Fprintf(s.out, "\nstopping (%s): the writers appended %d events in %d orders; waiting for the projectors to apply them…\n",
		reason, st.Events, st.Orders)
	ctx, cancel := context.WithTimeout(hurry, devCatchUp)
	defer cancel()
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	lastPrint, checked := stopped, stopped
	for {
		// Checking is a few aggregates over the whole events table: only
		// when a snapshot newer than the last check says the projectors
		// have caught up.
		snap := s.app.daemon.Snapshot()
		if snap.TakenAt.After(checked) && caughtUp(snap) {
			checked = snap.TakenAt
			rep, err := demo.Verify(ctx, s.pool)
			if err == nil && rep.OK() {
				s.status.print(time.Now(), snap, st)
				fmt.Fprintln(s.out, describeCheck(rep))
				return
			}
		}
		select {
		case <-ctx.Done():
			if hurry.Err() != nil {
				fmt.Fprintln(s.out, "second signal: not checking the read models")
				return
			}
			s.status.print(time.Now(), s.app.daemon.Snapshot(), st)
			rep, err := demo.Verify(context.WithoutCancel(ctx), s.pool)
			switch {
			case err != nil:
				fmt.Fprintf(s.out, "check: %s\n", oneLine(err.Error()))
			case rep.OK():
				fmt.Fprintln(s.out, describeCheck(rep))
			default:
				fmt.Fprintf(s.out, "check: the projectors did not catch up within %s: %s\n", devCatchUp, printable(strings.Join(rep.Problems, "; ")))
			}
			return
		case now := <-check.C:
			if now.Sub(lastPrint) >= devStatusEvery {
				s.status.print(now, snap, st)
				lastPrint = now
			}
		}
	}
}

// describeCheck is the line a successful check prints.
func describeCheck(r demo.Report) string {
	return fmt.Sprintf("check: the read models match all %d events: order_totals %d orders (%d shipped), "+
		"revenue_by_day %d day(s) with EUR %s captured, shipments_pending %d orders; nothing missing, nothing applied twice",
		r.Events, r.Orders, r.Shipped, r.Days, r.Revenue, r.Pending)
}

// close stops whatever start started, in reverse order, within ctx.
// Removing the cluster is never skipped: a leftover server or directory is
// the one thing dev must not leave behind.
func (s *devSession) close(ctx context.Context) error {
	if s.gen != nil {
		s.gen.Stop()
	}
	if s.app != nil {
		s.app.stop(ctx)
	}
	if s.webhook != nil {
		s.webhook.close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
	if s.cluster == nil {
		if s.pool != nil {
			fmt.Fprintln(s.out, "the demo tables stay in your database; dev dropped nothing")
		}
		return nil
	}
	dir := filepath.Dir(s.cluster.DataDir())
	if err := s.cluster.Close(); err != nil {
		return fmt.Errorf("error removing the throw-away PostgreSQL: %w", err)
	}
	fmt.Fprintf(s.out, "PostgreSQL stopped; %s removed\n", dir)
	return nil
}
