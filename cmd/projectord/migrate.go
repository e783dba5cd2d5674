package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/store"
)

func newMigrateCmd(e *env, g *globalFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade schema projectord (idempotent, safe to run concurrently)",
		Long: `Create or upgrade schema projectord in the source database and in every SQL
sink's target database. Migrations are embedded in the binary, applied in one
transaction behind an advisory lock, and recorded in
projectord.schema_migrations; running it twice, or from several replicas at
once, is safe. A database migrated by a newer projectord is refused.`,
		Example: "  projectord migrate --config /etc/projectord/projectord.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := setup(cmd, e, g)
			if err != nil {
				return err
			}
			for _, url := range databaseURLs(cfg) {
				if err := withPool(cmd.Context(), cfg, url, func(pool *pgxpool.Pool) error {
					res, err := store.Migrate(cmd.Context(), pool, currentBuild().Version)
					if err != nil {
						return err
					}
					fmt.Fprintf(e.stdout, "%s: schema projectord at version %d (was %d, applied %d)\n",
						config.RedactURL(url), res.To, res.From, len(res.Applied))
					return nil
				}); err != nil {
					return err
				}
			}
			_ = log.Sync()
			return nil
		},
	}
}

// databaseURLs is the source database and every distinct sink target.
func databaseURLs(cfg *config.Config) []string {
	urls := []string{cfg.Database.URL}
	seen := map[string]bool{cfg.Database.URL: true}
	for _, p := range cfg.Projectors {
		if p.Sink.SQL != nil && p.Sink.SQL.TargetURL != "" && !seen[p.Sink.SQL.TargetURL] {
			seen[p.Sink.SQL.TargetURL] = true
			urls = append(urls, p.Sink.SQL.TargetURL)
		}
	}
	return urls
}

// newPool opens a small pool on url for a one-off command.
func newPool(ctx context.Context, cfg *config.Config, url string) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, &configError{err: fmt.Errorf("invalid database URL %s", config.RedactURL(url))}
	}
	pc.MaxConns = 2
	pc.ConnConfig.ConnectTimeout = cfg.Database.ConnectTimeout
	return pgxpool.NewWithConfig(ctx, pc)
}

// withPool runs f with a small pool on url, bounded by the connect timeout.
func withPool(ctx context.Context, cfg *config.Config, url string, f func(*pgxpool.Pool) error) error {
	pool, err := newPool(ctx, cfg, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	pctx, cancel := context.WithTimeout(ctx, cfg.Database.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		return fmt.Errorf("error connecting to %s: %w", config.RedactURL(url), err)
	}
	return f(pool)
}
