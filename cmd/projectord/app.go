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
}

// startApp wires the registry, metrics, daemon and HTTP server and starts
// them. The daemon connects in the background.
func startApp(ctx context.Context, cfg *config.Config, log *zap.Logger, migrate bool) (*app, error) {
	build := currentBuild()
	reg := prometheus.NewRegistry()
	names := make([]string, len(cfg.Projectors))
	for i, p := range cfg.Projectors {
		names[i] = p.Name
	}
	m := metrics.New(reg, names, metrics.BuildInfo{Version: build.Version, Commit: build.Commit, GoVersion: build.GoVersion})
	m.UnsafeOrdering(cfg.Source.Ordering == "position")
	d := daemon.New(daemon.Options{Config: cfg, Logger: log, Version: build.Version, Migrate: migrate,
		Observer: m, OnSessionLost: m.SessionLost})
	reg.MustRegister(metrics.NewPoolCollector(d.Pools))
	m.SetFreshness(d.LeasesFresh)
	m.SetView(d.View)
	a := &app{cfg: cfg, log: log, daemon: d, metrics: m, sd: sdnotify.FromEnv()}
	if cfg.HTTP.Listen != "" {
		a.srv = server.New(cfg.HTTP.Listen, reg, d, log.Named("http"))
		if err := a.srv.Start(); err != nil {
			return nil, err
		}
	}
	if err := d.Start(ctx); err != nil {
		a.stop(ctx)
		return nil, err
	}
	a.notifyStarted()
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

// stop stops the daemon gracefully within ctx, then the HTTP server (which
// answers /readyz with 503 meanwhile).
func (a *app) stop(ctx context.Context) {
	// STOPPING=1 also moves systemd from the watchdog to TimeoutStopSec.
	if _, err := a.sd.Notify(sdnotify.MsgStopping + "\nSTATUS=stopping: finishing batches in flight"); err != nil {
		a.log.Warn("error notifying systemd", zap.Error(err))
	}
	a.daemon.Stop(ctx)
	if a.watchdog != nil {
		a.watchdog.Stop()
	}
	if a.srv != nil {
		a.srv.Stop(ctx)
	}
}

// runUntilSignal runs a until SIGINT/SIGTERM, ctx ends or the daemon hits a
// fatal error, then stops it within shutdown_timeout. A second signal exits
// at once.
func runUntilSignal(ctx context.Context, a *app) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var fatal error
	select {
	case sig := <-sigs:
		a.log.Info("signal received; stopping", zap.String("signal", sig.String()), zap.Duration("budget", a.cfg.ShutdownTimeout))
	case <-a.daemon.Done():
		if cause := a.daemon.Cause(); !errors.Is(cause, daemon.ErrStopped) {
			fatal = cause
		}
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
	if fatal != nil {
		return &configError{err: fatal}
	}
	return nil
}
