package main

import (
	"errors"
	"fmt"
	"os"
	"os/user"

	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/store"
)

func newPauseCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pause PROJECTOR",
		Short: "Stop a projector at a batch boundary, on every replica, until resumed",
		Long: `Record in the projector's checkpoint that it is paused. From the moment this
command returns, no batch of the projector commits: the fenced checkpoint move
refuses it, so a batch in flight is rolled back whole and is read again from
the checkpoint after the resume. The leader keeps its lock, so no other
replica starts the projector; it stops at its next batch boundary, shows
status "paused" (projectord status, /status, projectord_projector_state) and
applies nothing, and a replica that becomes leader later (a restart, a
failover) stays paused too. The pause holds until ` + "`projectord resume PROJECTOR`" + `.

Exit status 2, with nothing changed, for a projector that is not configured
or has no checkpoint yet (it never ran).`,
		Example: "  projectord pause order_totals --config /etc/projectord/projectord.yaml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := loadProjector(cmd, g, args[0])
			if err != nil {
				return err
			}
			var already bool
			err = op.withTarget(cmd.Context(), func(t *store.Target) error {
				already, err = t.Pause(cmd.Context(), op.p.Name, operatorName())
				return err
			})
			if errors.Is(err, store.ErrNoCheckpoint) {
				return &usageError{msg: err.Error()}
			}
			if err != nil {
				return err
			}
			name := printable(op.p.Name)
			if already {
				fmt.Fprintf(e.stdout, "%s is already paused; nothing changed\n", name)
				return nil
			}
			if err := op.notify(cmd.Context(), store.PauseChannel); err != nil {
				// The fence holds without it: the leader learns at its next commit.
				fmt.Fprintf(e.stderr, "warning: %s paused, but the replicas could not be notified (%v); its leader stops at its next batch\n",
					name, err)
			}
			fmt.Fprintf(e.stdout, "%s paused: no batch commits from now on; the leader holds its lock until `projectord resume %s`\n", name, name)
			return nil
		},
	}
	return cmd
}

// operatorName says who ran an operator command, for the records it
// leaves: the OS user and host, never anything from the configuration.
func operatorName() string {
	who := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		who = u.Username
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		who += "@" + h
	}
	return "projectord pause (" + who + ")"
}
