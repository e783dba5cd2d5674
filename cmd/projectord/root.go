package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/config"
)

// globalFlags are the flags every command accepts. Their names are config
// keys (config.DefineFlag), so config.Load binds them with flag > env >
// file > default precedence.
type globalFlags struct {
	config string
}

func newRootCmd(e *env) *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "projectord",
		Short: "Keep read models current from a PostgreSQL event store",
		Long: `projectord runs projectors: for each one, exactly one replica holds a PostgreSQL
advisory lock, reads the events after its checkpoint (gap-safe, by transaction
id), applies them through its sink and moves the checkpoint in the same
transaction, then follows new events live.

Configuration comes from a YAML file (--config, $PROJECTORD_CONFIG,
./configs/projectord.yaml, /etc/projectord/projectord.yaml), PROJECTORD_*
environment variables and flags; precedence is flag > env > file > default.`,
		Example: `  projectord migrate --config /etc/projectord/projectord.yaml
  projectord run --config /etc/projectord/projectord.yaml
  PROJECTORD_DATABASE_URL=postgres://app@db/app projectord config validate`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.config, "config", "", "config file (default: $PROJECTORD_CONFIG, ./configs/projectord.yaml, /etc/projectord/projectord.yaml)")
	config.DefineFlag(pf, "database.url", "PostgreSQL URL of the event store")
	config.DefineFlag(pf, "log.format", "log format: json or console")
	config.DefineFlag(pf, "log.level", "log level: debug, info, warn, error")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	root.AddCommand(
		newRunCmd(e, g),
		newMigrateCmd(e, g),
		newConfigCmd(e, g),
		newSourceCmd(e, g),
		newStatusCmd(e, g),
		newResetCmd(e, g),
		newResumeCmd(e, g),
		newPauseCmd(e, g),
		newDeadLettersCmd(e, g),
		newVersionCmd(e),
		newDevCmd(e, g),
	)
	return root
}

// loadConfig loads and validates the configuration for cmd, for commands
// without a logger: the configuration's warnings go to stderr.
func loadConfig(cmd *cobra.Command, g *globalFlags) (*config.Config, error) {
	cfg, err := readConfig(cmd, g)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
	}
	return cfg, nil
}

func readConfig(cmd *cobra.Command, g *globalFlags) (*config.Config, error) {
	cfg, err := config.Load(config.LoadOptions{File: g.config, Flags: cmd.Flags()})
	if err != nil {
		if _, ok := err.(*config.ValidationError); ok {
			return nil, err
		}
		return nil, &configError{err: err}
	}
	return cfg, nil
}

// setup loads the configuration and builds the logger from it, which logs
// the configuration's warnings.
func setup(cmd *cobra.Command, e *env, g *globalFlags) (*config.Config, *zap.Logger, error) {
	cfg, err := readConfig(cmd, g)
	if err != nil {
		return nil, nil, err
	}
	log, err := newLogger(cfg.Log.Format, cfg.Log.Level, e.stderr)
	if err != nil {
		return nil, nil, &configError{err: err}
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	return cfg, log, nil
}
