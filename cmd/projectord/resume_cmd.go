package main

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/store"
)

func newResumeCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resume PROJECTOR",
		Short: "End a projector's halt: the replicas run it again from its checkpoint",
		Long: `A halted projector stays halted on every replica: its checkpoint records who
halted it, on which event and when, and no replica whose handlers are the ones
that halted it claims it again (restarting replicas does not clear it). Once
the cause is fixed (the data, a table, a permission), resume clears the halt
record, and the running replicas are told at once (and see it at their next
status refresh at the latest): one of them leads the projector again and
retries the event it halted on. Deploying changed handlers ends the halt too:
a replica whose handlers differ from those that halted it claims it.`,
		Example: "  projectord resume order_totals --config /etc/projectord/projectord.yaml",
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
			url := p.Sink.SQL.TargetURL
			if url == "" {
				url = cfg.Database.URL
			}
			var was bool
			err = withPool(cmd.Context(), cfg, url, func(pool *pgxpool.Pool) error {
				if err := store.CheckTrust(cmd.Context(), pool); err != nil {
					return err
				}
				was, err = store.NewTarget(pool, cfg.Database.QueryTimeout).Resume(cmd.Context(), p.Name)
				return err
			})
			if err != nil {
				return err
			}
			if !was {
				fmt.Fprintf(e.stdout, "%s is not halted; nothing to resume\n", printable(p.Name))
				return nil
			}
			// Replicas listen where their coordination sessions run.
			coordURL := cfg.Coordination.URL
			if coordURL == "" {
				coordURL = cfg.Database.URL
			}
			err = withPool(cmd.Context(), cfg, coordURL, func(pool *pgxpool.Pool) error {
				return store.Notify(cmd.Context(), pool, store.ResumeChannel, p.Name)
			})
			if err != nil {
				// The halt is cleared; replicas see it at their next refresh.
				fmt.Fprintf(e.stderr, "warning: %s resumed, but the replicas could not be notified (%v); they see it within metrics.refresh_interval\n",
					printable(p.Name), err)
			}
			fmt.Fprintf(e.stdout, "%s resumed; a replica leads it again from its checkpoint\n", printable(p.Name))
			return nil
		},
	}
	return cmd
}
