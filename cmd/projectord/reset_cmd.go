package main

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/store"
)

func newResetCmd(e *env, g *globalFlags) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "reset PROJECTOR",
		Short: "Rebuild a projector's read model from the first event",
		Long: `Run the projector's sink.sql.reset SQL and move its checkpoint back to the
start, in one transaction that first bumps the leader epoch. Running replicas
need no restart: the current leader is fenced at its next commit (a batch in
flight cannot commit after the reset SQL), steps down, and the next leader
replays every event into the emptied read model. A halted
projector's halt is cleared too, on every replica.

Without reset SQL only the checkpoint moves, so handlers must be idempotent
(upserts) for the replay to be correct.`,
		Example: "  projectord reset order_totals --yes --config /etc/projectord/projectord.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd, g)
			if err != nil {
				return err
			}
			p, ok := cfg.Projector(args[0])
			if !ok {
				return &usageError{msg: fmt.Sprintf("no projector named %q in the configuration", args[0])}
			}
			if !yes {
				return &usageError{msg: fmt.Sprintf("reset empties the read model of %s: add --yes to confirm", p.Name)}
			}
			url := p.Sink.SQL.TargetURL
			if url == "" {
				url = cfg.Database.URL
			}
			err = withPool(cmd.Context(), cfg, url, func(pool *pgxpool.Pool) error {
				if err := store.CheckTrust(cmd.Context(), pool); err != nil {
					return err
				}
				epoch, err := store.NewTarget(pool, cfg.Database.QueryTimeout).Reset(cmd.Context(), p.Name, p.Sink.SQL.Reset)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s reset (epoch %d); the leader replays it from the first event\n", p.Name, epoch)
				return nil
			})
			if err != nil {
				return err
			}
			// NOTIFY is per database: when the read model lives elsewhere,
			// tell the replicas where their coordination sessions listen.
			coordURL := cfg.Coordination.URL
			if coordURL == "" {
				coordURL = cfg.Database.URL
			}
			if coordURL == url {
				return nil
			}
			return withPool(cmd.Context(), cfg, coordURL, func(pool *pgxpool.Pool) error {
				return store.Notify(cmd.Context(), pool, store.ResetChannel, p.Name)
			})
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm emptying the read model")
	return cmd
}
