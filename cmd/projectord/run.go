package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/metrics"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/server"
)

func newRunCmd(e *env, g *globalFlags) *cobra.Command {
	var noMigrate bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run every configured projector (the daemon)",
		Long: `Run every configured projector. Each replica competes for each projector's
advisory lock; the leader catches up from its checkpoint and then follows new
events live, standbys take over when it stops, dies or stalls.

On SIGTERM or SIGINT, leaders finish the batch in flight, commit, release their
locks (standbys are told at once) and the process exits 0 within
shutdown_timeout. A second signal exits immediately.`,
		Example: `  projectord run --config /etc/projectord/projectord.yaml
  PROJECTORD_DATABASE_URL=postgres://app@db/app projectord run --no-migrate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup(cmd, e, g)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			if len(cfg.Projectors) == 0 {
				return &configError{err: fmt.Errorf("projectors: none configured; nothing to run")}
			}
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sigs)

			build := currentBuild()
			reg := prometheus.NewRegistry()
			names := make([]string, len(cfg.Projectors))
			for i, p := range cfg.Projectors {
				names[i] = p.Name
			}
			m := metrics.New(reg, names, metrics.BuildInfo{Version: build.Version, Commit: build.Commit, GoVersion: build.GoVersion})
			m.UnsafeOrdering(cfg.Source.Ordering == "position")
			d := runner.New(runner.Options{Config: cfg, Logger: log, Version: build.Version, Migrate: !noMigrate,
				Observer: m, OnHeartbeatFailure: m.HeartbeatFailed})
			reg.MustRegister(metrics.NewPoolCollector(d.Pools))
			var srv *server.Server
			if cfg.HTTP.Listen != "" {
				srv = server.New(cfg.HTTP.Listen, reg, d, log.Named("http"))
				if err := srv.Start(); err != nil {
					return err
				}
			}
			if err := d.Start(cmd.Context()); err != nil {
				return err
			}
			var fatal error
			select {
			case sig := <-sigs:
				log.Info("signal received; stopping", zap.String("signal", sig.String()), zap.Duration("budget", cfg.ShutdownTimeout))
			case fatal = <-d.Fatal():
			case <-cmd.Context().Done():
			}
			stopCtx, cancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), cfg.ShutdownTimeout)
			defer cancel()
			go func() {
				select {
				case sig := <-sigs:
					log.Warn("second signal; exiting now", zap.String("signal", sig.String()))
					_ = log.Sync()
					os.Exit(exitRuntime)
				case <-stopCtx.Done():
				}
			}()
			d.Stop(stopCtx)
			if srv != nil {
				srv.Stop(stopCtx)
			}
			if fatal != nil {
				return &configError{err: fatal}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&noMigrate, "no-migrate", false, "do not apply schema migrations on start; only check the schema version")
	return cmd
}
