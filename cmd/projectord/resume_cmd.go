package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/store"
)

func newResumeCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "resume PROJECTOR",
		Short: "End a projector's halt or pause: the replicas run it again from its checkpoint",
		Long: `One command ends both a halt and a pause (projectord pause); a projector that
is halted and paused is resumed from both at once.

A halted projector stays halted on every replica: its checkpoint records who
halted it, on which event and when, and no replica whose handlers are the ones
that halted it claims it again (restarting replicas does not clear it). Once
the cause is fixed (the data, a table, a permission), resume clears the halt
record, and the running replicas are told at once (and see it at their next
status refresh at the latest): one of them leads the projector again and
retries the event it halted on. Deploying changed handlers ends the halt too:
a replica whose handlers differ from those that halted it claims it.

A paused projector's leader, which kept its lock, reads on from the
checkpoint: a batch that was refused when the pause landed is read again,
so nothing is skipped.

Exit status 2, with nothing changed, for a projector that is not configured
or has no checkpoint yet (it never ran).`,
		Example: "  projectord resume order_totals --config /etc/projectord/projectord.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := loadProjector(cmd, g, args[0])
			if err != nil {
				return err
			}
			var was, known bool
			err = op.withTarget(cmd.Context(), func(t *store.Target) error {
				if _, known, err = t.Load(cmd.Context(), op.p.Name); err != nil || !known {
					return err
				}
				was, err = t.Resume(cmd.Context(), op.p.Name)
				return err
			})
			if err != nil {
				return err
			}
			name := printable(op.p.Name)
			if !known {
				return &usageError{msg: fmt.Sprintf("projector %s has no checkpoint in its target database (it has never run there): nothing to resume", name)}
			}
			if !was {
				fmt.Fprintf(e.stdout, "%s is neither halted nor paused; nothing to resume\n", name)
				return nil
			}
			if err := op.notify(cmd.Context(), store.ResumeChannel); err != nil {
				// The halt is cleared; replicas see it at their next refresh.
				fmt.Fprintf(e.stderr, "warning: %s resumed, but the replicas could not be notified (%v); they see it within metrics.refresh_interval\n",
					name, err)
			}
			fmt.Fprintf(e.stdout, "%s resumed; a replica leads it again from its checkpoint\n", name)
			return nil
		},
	}
	return cmd
}
