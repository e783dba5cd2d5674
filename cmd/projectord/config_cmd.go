package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/daemon"
	"github.com/projectord/projectord/internal/httpsink"
	"github.com/projectord/projectord/internal/store"
)

func newConfigCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Validate or print the configuration",
		Args:  cobra.NoArgs,
	}
	var checkDB bool
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check the configuration; exit 2 listing every problem",
		Long: `Load the configuration from file, environment and flags and report every
problem at once, each with its field path. With --check-db, also connect:
check the source table and its xid8 column, and prepare every SQL handler so
an unknown table or column is reported with its projector and event type.
Mapped source columns that may hold NULL are reported as warnings (a NULL
stream id, version, type or creation time makes its row a poison event); they
do not change the exit code.`,
		Example: "  projectord config validate --config configs/projectord.yaml\n  projectord config validate --check-db",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, g)
			if err != nil {
				return err
			}
			for i, p := range cfg.Projectors {
				if h := p.Sink.HTTP; h != nil {
					// The files are read as run reads them: a secret that
					// run would refuse fails validation too.
					if h.SecretFile != "" {
						if _, err := httpsink.LoadSecret(p.Name, h.SecretFile); err != nil {
							return &configError{err: err}
						}
					}
					if h.HeadersFile != "" {
						if _, err := httpsink.LoadHeaders(p.Name, h.HeadersFile); err != nil {
							return &configError{err: err}
						}
					}
				}
				if p.Sink.SQL == nil {
					continue
				}
				if _, err := store.CompileSQLSink(p.Sink.SQL.Handlers, p.Sink.SQL.Reset); err != nil {
					return &configError{err: fmt.Errorf("projectors[%d].sink.sql.%v", i, err)}
				}
			}
			if checkDB {
				resolved, warnings, err := checkDatabase(cmd, cfg)
				if resolved != "" {
					fmt.Fprintf(e.stdout, "source table %s resolves to %s\n", printable(cfg.Source.Table), printable(resolved))
				}
				// Warnings do not fail the check: they are printed, and the
				// exit code stays what the problems make it.
				for _, w := range warnings {
					fmt.Fprintf(e.stderr, "warning: %s\n", w)
				}
				if err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stdout, "configuration OK: %d projector%s\n", len(cfg.Projectors), plural(len(cfg.Projectors)))
			return nil
		},
	}
	validate.Flags().BoolVar(&checkDB, "check-db", false, "also check the source table and prepare every SQL handler against the database")

	print := &cobra.Command{
		Use:     "print",
		Short:   "Print the effective configuration, secrets redacted",
		Long:    "Print the configuration after defaults, file, environment and flags are merged, as YAML. Passwords in database URLs are replaced by xxxxx.",
		Example: "  PROJECTORD_DATABASE_URL=postgres://app:secret@db/app projectord config print",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd, g)
			if err != nil {
				return err
			}
			out, err := cfg.Redacted().YAML()
			if err != nil {
				return err
			}
			_, err = e.stdout.Write(out)
			return err
		},
	}
	cmd.AddCommand(validate, print)
	return cmd
}

// checkDatabase checks the source and prepares every handler. It returns
// warnings (mapped source columns that may hold NULL) beside the error.
func checkDatabase(cmd *cobra.Command, cfg *config.Config) (resolved string, warnings []string, _ error) {
	ctx := cmd.Context()
	var problems []config.Problem
	err := withPool(ctx, cfg, cfg.Database.URL, func(pool *pgxpool.Pool) error {
		if err := store.CheckTrust(ctx, pool); err != nil {
			return err
		}
		switch err := lockBudget(ctx, cfg, pool); {
		case errors.Is(err, store.ErrLockBudget):
			problems = append(problems, config.Problem{Path: "projectors", Message: err.Error()})
		case err != nil:
			return err
		}
		src, err := daemon.SourceOf(cfg.Source).Resolve(ctx, pool)
		if err != nil {
			problems = append(problems, config.Problem{Path: "source.table", Message: err.Error()})
			return nil
		}
		resolved = src.QualifiedName()
		layout, err := src.Inspect(ctx, pool)
		if err != nil {
			problems = append(problems, config.Problem{Path: "source", Message: err.Error()})
			return nil
		}
		warnings = src.NullableWarnings(layout)
		switch err := store.CheckCursorIndex(ctx, pool, src); {
		case errors.Is(err, store.ErrNoCursorIndex) && cfg.Source.AllowUnindexed:
			warnings = append(warnings, "source.allow_unindexed: "+err.Error())
		case errors.Is(err, store.ErrNoCursorIndex):
			problems = append(problems, config.Problem{Path: "source", Message: err.Error() + " (or set source.allow_unindexed: true for a tiny table)"})
		case err != nil:
			return err
		}
		return nil
	})
	if err != nil {
		return resolved, warnings, err
	}
	for i, p := range cfg.Projectors {
		if p.Sink.SQL == nil {
			continue // an HTTP sink has no handler to check in a database
		}
		sink, err := store.CompileSQLSink(p.Sink.SQL.Handlers, p.Sink.SQL.Reset)
		if err != nil {
			return resolved, warnings, &configError{err: err}
		}
		url := p.Sink.SQL.TargetURL
		if url == "" {
			url = cfg.Database.URL
		}
		err = withPool(ctx, cfg, url, func(pool *pgxpool.Pool) error {
			bad, err := sink.Check(ctx, pool)
			for _, b := range bad {
				path := fmt.Sprintf("projectors[%d].sink.sql.handlers[%s]", i, b.EventType)
				if b.EventType == "reset" {
					path = fmt.Sprintf("projectors[%d].sink.sql.reset", i)
				}
				problems = append(problems, config.Problem{Path: path, Message: fmt.Sprintf("projector %s: %v", p.Name, b.Err)})
			}
			return err
		})
		if err != nil {
			return resolved, warnings, err
		}
	}
	if len(problems) > 0 {
		return resolved, warnings, &config.ValidationError{Problems: problems}
	}
	return resolved, warnings, nil
}

// lockBudget checks the configured projectors against the coordination
// server's lock table, as `run` does at start-up.
func lockBudget(ctx context.Context, cfg *config.Config, source *pgxpool.Pool) error {
	check := func(pool *pgxpool.Pool) error {
		ls, err := store.ReadLockSettings(ctx, pool)
		if err != nil {
			return err
		}
		return ls.Check(len(cfg.Projectors), int(cfg.Database.MaxConns))
	}
	if cfg.Coordination.URL == "" || cfg.Coordination.URL == cfg.Database.URL {
		return check(source)
	}
	return withPool(ctx, cfg, cfg.Coordination.URL, check)
}
