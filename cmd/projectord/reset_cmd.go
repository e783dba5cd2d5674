package main

import (
	"errors"
	"fmt"

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
projector's halt is cleared too, on every replica, and its dead letters
are deleted: the replay meets their events again (and dead-letters anew
those that still fail), so a retry of an old one would apply its event
twice.

Without reset SQL only the checkpoint moves, so handlers must be idempotent
(upserts) for the replay to be correct.`,
		Example: "  projectord reset order_totals --yes --config /etc/projectord/projectord.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := loadProjector(cmd, g, args[0])
			if err != nil {
				return err
			}
			if !yes {
				return &usageError{msg: fmt.Sprintf("reset empties the read model of %s: add --yes to confirm", op.p.Name)}
			}
			err = op.withTarget(cmd.Context(), func(t *store.Target) error {
				epoch, err := t.Reset(cmd.Context(), op.p.Name, op.p.Sink.ResetSQL())
				if errors.Is(err, store.ErrSuperseded) {
					// The configuration names a version a newer one replaced:
					// the input to fix, not the database.
					return &usageError{msg: err.Error()}
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "%s reset (epoch %d); its dead letters were deleted; the leader replays it from the first event\n", op.p.Name, epoch)
				return nil
			})
			if err != nil || op.coord == op.target {
				// The reset notifies in its own transaction, in the target
				// database; replicas listening elsewhere are told below.
				return err
			}
			return op.notify(cmd.Context(), store.ResetChannel)
		},
	}
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm emptying the read model")
	return cmd
}
