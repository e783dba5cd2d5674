package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/daemon"
	"github.com/projectord/projectord/internal/metrics"
	"github.com/projectord/projectord/internal/sdnotify"
	"github.com/projectord/projectord/internal/server"
)

// app is a running daemon with its metrics and HTTP server: what `run` and
// `dev` share.
type app struct {
	cfg     *config.Config
	log     *zap.Logger
	daemon  *daemon.Daemon
	metrics *metrics.Metrics
	srv     *server.Server // nil when http.listen is ""
	// sd notifies systemd when it supervises the process (a no-op otherwise).
	sd       sdnotify.Notifier
	watchdog *sdnotify.WatchdogLoop // nil unless systemd's watchdog is on

	// services are the process's parts in the order they start; stop ends
	// the started ones in reverse.
	services []service
	started  int
}

// service is one part of the process under one contract (river's
// startstop): start returns once the part runs, or with why it cannot;
// stop returns once it has stopped, or when ctx ends.
type service struct {
	name  string
	start func(ctx context.Context) error
	stop  func(ctx context.Context)
}

// startApp wires the registry, metrics, daemon and HTTP server and starts
// them: the HTTP server first (probes answer while the daemon connects), the
// daemon (which connects in the background), then systemd's READY=1 and
// watchdog. On an error, what started is stopped again.
func startApp(ctx context.Context, cfg *config.Config, log *zap.Logger, migrate bool) (*app, error) {
	build := currentBuild()
	tuneGC(log)
	// Projectors by version key (daemon.Keyed), as the daemon reports them.
	cfg = daemon.Keyed(cfg)
	reg := prometheus.NewRegistry()
	names := make([]string, len(cfg.Projectors))
	for i, p := range cfg.Projectors {
		names[i] = p.Name
	}
	m := metrics.New(reg, names, metrics.BuildInfo{Version: build.Version, Commit: build.Commit, GoVersion: build.GoVersion})
	m.UnsafeOrdering(cfg.Source.Ordering == "position")
	var httpNames []string
	for _, p := range cfg.Projectors {
		if p.Sink.HTTP != nil {
			httpNames = append(httpNames, p.Name)
		}
	}
	d := daemon.New(daemon.Options{Config: cfg, Logger: log, Version: build.Version, Migrate: migrate,
		Observer: m, OnSessionLost: m.SessionLost, OnSourceIndexed: func(ok bool) { m.Unindexed(!ok) }, ObserveRead: m.SourceRead,
		OnCommit: m.Committed, HTTPObserver: metrics.NewHTTP(reg, httpNames)})
	reg.MustRegister(metrics.NewPoolCollector(d.Pools))
	m.SetFreshness(d.LeasesFresh)
	m.SetView(d.View)
	m.SetWeights(daemon.Weights(cfg))
	m.SetBalance(d.Balance)
	a := &app{cfg: cfg, log: log, daemon: d, metrics: m, sd: sdnotify.FromEnv()}
	if cfg.HTTP.Listen != "" {
		a.srv = server.New(cfg.HTTP.Listen, reg, d, log.Named("http"))
		// It stops last, answering /readyz with 503 while the rest stops.
		a.services = append(a.services, service{name: "http server",
			start: func(context.Context) error { return a.srv.Start() }, stop: a.srv.Stop})
	}
	a.services = append(a.services,
		service{name: "daemon", start: d.Start, stop: d.Stop},
		service{name: "systemd notify", start: func(context.Context) error { a.notifyStarted(); return nil }, stop: a.notifyStopping})
	for _, s := range a.services {
		if err := s.start(ctx); err != nil {
			// What started stops within the shutdown budget, as on a signal.
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			a.stop(stopCtx)
			cancel()
			return nil, err
		}
		a.started++
	}
	return a, nil
}

// notifyStarted sends READY=1 to systemd and starts the watchdog loop.
//
// READY=1 goes out as soon as the process is up (HTTP server listening,
// daemon bootstrapping), not once the database answers: to the supervisor,
// ready means started, and database readiness is /readyz's job. Waiting for
// the database would turn an outage into a failed start job
// (TimeoutStartSec), kill and restart: the crash loop the design rules out.
func (a *app) notifyStarted() {
	if _, err := a.sd.Notify(sdnotify.MsgReady + "\nSTATUS=running; database readiness: /readyz"); err != nil {
		a.log.Warn("error notifying systemd", zap.Error(err))
	}
	timeout, ok := a.sd.WatchdogInterval()
	if !ok || a.sd.Socket == "" {
		return
	}
	a.log.Info("systemd watchdog enabled", zap.Duration("timeout", timeout))
	// Ping only while the daemon's loops tick (never checks the database),
	// so a stuck process is restarted but a database outage is not.
	a.watchdog = a.sd.StartWatchdog(timeout/2, func() bool {
		live, checks := a.daemon.Live()
		if !live {
			a.log.Warn("not live; withholding the systemd watchdog ping", zap.Any("checks", checks))
		}
		return live
	}, func(err error) { a.log.Warn("error pinging the systemd watchdog", zap.Error(err)) })
}

// notifyStopping sends STOPPING=1, which also moves systemd from the
// watchdog to TimeoutStopSec, and stops the watchdog loop.
func (a *app) notifyStopping(context.Context) {
	if _, err := a.sd.Notify(sdnotify.MsgStopping + "\nSTATUS=stopping: finishing batches in flight"); err != nil {
		a.log.Warn("error notifying systemd", zap.Error(err))
	}
	if a.watchdog != nil {
		a.watchdog.Stop()
	}
}

// stop stops what started, in reverse order, within ctx: systemd is told
// first, the daemon stops gracefully (cutting batches short if ctx ends
// first), the HTTP server last. Safe twice.
func (a *app) stop(ctx context.Context) {
	for ; a.started > 0; a.started-- {
		a.services[a.started-1].stop(ctx)
	}
}

// runUntilSignal runs a until SIGINT/SIGTERM, ctx ends or the daemon hits a
// fatal error, then stops it within shutdown_timeout. A second signal exits
// at once.
func runUntilSignal(ctx context.Context, a *app) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case sig := <-sigs:
		a.log.Info("signal received; stopping", zap.String("signal", sig.String()), zap.Duration("budget", a.cfg.ShutdownTimeout))
	case <-a.daemon.Done():
	case <-ctx.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.ShutdownTimeout)
	defer cancel()
	go func() {
		select {
		case sig := <-sigs:
			a.log.Warn("second signal; exiting now", zap.String("signal", sig.String()))
			_ = a.log.Sync()
			os.Exit(exitRuntime)
		case <-stopCtx.Done():
		}
	}()
	a.stop(stopCtx)
	// The daemon's cause, not the case picked above, says how it ended: a
	// fatal error met before Stop stays its cause, whether it came first
	// or together with a signal (select picks at random among ready cases).
	if cause := a.daemon.Cause(); cause != nil && !errors.Is(cause, daemon.ErrStopped) {
		return &configError{err: cause}
	}
	return nil
}
