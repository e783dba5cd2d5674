package main

import (
	"fmt"

	"github.com/spf13/cobra"
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
			a, err := startApp(cmd.Context(), cfg, log, !noMigrate)
			if err != nil {
				return err
			}
			return runUntilSignal(cmd.Context(), a)
		},
	}
	cmd.Flags().BoolVar(&noMigrate, "no-migrate", false, "do not apply schema migrations on start; only check the schema version")
	return cmd
}
