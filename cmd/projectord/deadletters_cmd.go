package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/store"
)

func newDeadLettersCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dead-letters",
		Short: "List, retry or discard the events projectors dead-lettered (on_error.then: dead_letter)",
		Long: `A projector whose on_error.then is dead_letter records an event that failed
every attempt in projectord.dead_letters, in its target database, and goes on.
These commands show those rows, have the projector's leader apply them again
through its current handlers, or delete one.

Exit status 2, with nothing changed, for a projector that is not configured,
a position it has no dead letter at, or flags that do not go together.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &usageError{msg: "dead-letters needs a subcommand: list, retry or discard"}
		},
	}
	cmd.AddCommand(newDeadLettersListCmd(e, g), newDeadLettersRetryCmd(e, g), newDeadLettersDiscardCmd(e, g))
	return cmd
}

// deadLetterDoc is one row of `dead-letters list -o json` (README,
// "projectord dead-letters").
type deadLetterDoc struct {
	Projector string `json:"projector"`
	// Position and Cursor name the event in the source; Position is what
	// retry --position and discard --position take.
	Position      int64     `json:"position"`
	Cursor        cursorDoc `json:"cursor"`
	EventID       *string   `json:"event_id"`
	EventType     string    `json:"event_type"`
	StreamID      string    `json:"stream_id"`
	StreamVersion *int64    `json:"stream_version"`
	Error         string    `json:"error"`
	Attempts      int       `json:"attempts"`
	FailedAt      time.Time `json:"failed_at"`
	// RetryRequested is true from `dead-letters retry` until the leader
	// has handled the row (applied rows are deleted).
	RetryRequested   bool       `json:"retry_requested"`
	RetryRequestedAt *time.Time `json:"retry_requested_at"`
	// RetriedAt is when a retry last failed again (Error is its error).
	RetriedAt *time.Time `json:"retried_at"`
}

func deadLetterDocOf(d store.DeadLetterRow) deadLetterDoc {
	doc := deadLetterDoc{Projector: d.Projector, Position: d.Cursor.Position,
		Cursor:    cursorDoc{XID: d.Cursor.XID, Position: d.Cursor.Position},
		EventType: d.EventType, StreamID: d.StreamID, StreamVersion: d.StreamVersion,
		Error: d.Error, Attempts: d.Attempts, FailedAt: d.FailedAt.UTC(),
		RetryRequested: d.RetryRequestedAt != nil, RetryRequestedAt: d.RetryRequestedAt, RetriedAt: d.RetriedAt}
	if d.EventID != "" {
		id := d.EventID
		doc.EventID = &id
	}
	return doc
}

func newDeadLettersListCmd(e *env, g *globalFlags) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list [PROJECTOR]",
		Short: "Show the dead letters of one projector, or of every configured one",
		Long: `Print the dead letters of PROJECTOR, or without it of every projector in the
target databases of the configured projectors: the projector, the event's
position and cursor (xid/position), its event id, type and stream, the error,
the attempts, when it failed, and whether a retry is requested. -o json
prints an array with every field.`,
		Example: "  projectord dead-letters list\n  projectord dead-letters list order_totals -o json",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return &usageError{msg: fmt.Sprintf("--output must be table or json, not %q", output)}
			}
			var rows []store.DeadLetterRow
			if len(args) == 1 {
				op, err := loadProjector(cmd, g, args[0])
				if err != nil {
					return err
				}
				err = op.withTarget(cmd.Context(), func(t *store.Target) error {
					rows, err = t.DeadLetters(cmd.Context(), op.p.Name)
					return err
				})
				if err != nil {
					return err
				}
			} else {
				cfg, err := loadConfig(cmd, g)
				if err != nil {
					return err
				}
				// Every target database once: several projectors may share one.
				var urls []string
				for _, p := range cfg.Projectors {
					u := p.Sink.SQL.TargetURL
					if u == "" {
						u = cfg.Database.URL
					}
					if !slices.Contains(urls, u) {
						urls = append(urls, u)
					}
				}
				for _, u := range urls {
					op := &projectorOp{cfg: cfg, target: u}
					err := op.withTarget(cmd.Context(), func(t *store.Target) error {
						r, err := t.DeadLetters(cmd.Context(), "")
						rows = append(rows, r...)
						return err
					})
					if err != nil {
						return err
					}
				}
			}
			docs := make([]deadLetterDoc, 0, len(rows))
			for _, r := range rows {
				docs = append(docs, deadLetterDocOf(r))
			}
			if output == "json" {
				out, err := json.MarshalIndent(docs, "", "  ")
				if err != nil {
					return err
				}
				_, err = e.stdout.Write(append(jsonASCIIControls(out), '\n'))
				return err
			}
			printDeadLetters(e.stdout, docs)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printDeadLetters(w io.Writer, docs []deadLetterDoc) {
	if len(docs) == 0 {
		fmt.Fprintln(w, "no dead letters")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTOR\tPOSITION\tCURSOR\tEVENT ID\tTYPE\tSTREAM\tATTEMPTS\tFAILED AT\tRETRY\tERROR")
	for _, d := range docs {
		id, retry := "-", "-"
		if d.EventID != nil {
			id = *d.EventID
		}
		if d.RetryRequested {
			retry = "requested"
		} else if d.RetriedAt != nil {
			retry = "failed again"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d/%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", printable(d.Projector), d.Position, d.Cursor.XID, d.Cursor.Position,
			printable(id), printable(dash(d.EventType)), printable(dash(d.StreamID)), d.Attempts, d.FailedAt.Format(time.RFC3339), retry,
			printable(truncate(oneLine(d.Error), 80)))
	}
	_ = tw.Flush()
}

// defaultRetryTimeout bounds how long `dead-letters retry` waits for the
// leader: it handles a request at its next batch boundary, which a healthy
// projector reaches within a batch's time.
const defaultRetryTimeout = 30 * time.Second

func newDeadLettersRetryCmd(e *env, g *globalFlags) *cobra.Command {
	var position int64
	var all bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "retry PROJECTOR (--position P | --all)",
		Short: "Have the projector's leader apply dead letters again through its current handlers",
		Long: `Mark the dead letter at --position P, or every dead letter of the projector
with --all, as requested for retry, and wait (at most --timeout) for the
projector's leader to handle them. The command applies nothing itself: the
leader, at its next batch boundary, applies the requested events through its
current handlers, in position order, in one transaction fenced like every
checkpoint move, which also deletes the rows that applied. So each event is
applied once, even when two retries are requested or the leader changes.

Reported per position: "applied" (the row is gone), or "failed again" with
the error (the row stays with the new error and one more attempt, its request
cleared; nothing is lost). A retry that fails again does not halt the
projector: the event was dead-lettered already, and live events go on.
Deploy the fixed handler first (restart the replicas with it).

If no replica leads the projector, the request is recorded and the command
says so and exits 1: the next leader handles it when it starts. A paused
projector applies nothing, dead letters included: the retry is refused
(resume it first). Exit status 1 also when an event failed again or the
timeout passed first (the requests stay and are handled later).`,
		Example: "  projectord dead-letters retry order_totals --all\n  projectord dead-letters retry order_totals --position 1234 --timeout 1m",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			hasPos := cmd.Flags().Changed("position")
			switch {
			case hasPos && all:
				return &usageError{msg: "--position and --all do not go together: retry one dead letter or all of them"}
			case !hasPos && !all:
				return &usageError{msg: "say which dead letters to retry: --position P or --all"}
			case timeout <= 0:
				return &usageError{msg: fmt.Sprintf("--timeout must be positive, not %s", timeout)}
			}
			op, err := loadProjector(cmd, g, args[0])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			name := printable(op.p.Name)
			if op.p.Sink.HTTP != nil {
				// Not yet: the leader retries through an SQL sink only.
				return &usageError{msg: fmt.Sprintf("%s has an HTTP sink: dead-letters retry works for SQL sinks only; `projectord dead-letters list %s` shows the events, which the receiver can fetch from the event store", name, name)}
			}
			// Who leads, before anything changes: a paused projector is
			// refused with nothing changed.
			state, err := op.state(ctx)
			if err != nil {
				return err
			}
			if state == statePaused {
				return &usageError{msg: fmt.Sprintf("%s is paused and applies nothing, dead letters included: run `projectord resume %s` first", name, name)}
			}
			var pos *int64
			if hasPos {
				pos = &position
			}
			var requested []store.DeadLetterRow
			var target *store.Target
			return op.withTarget(ctx, func(t *store.Target) error {
				target = t
				requested, err = t.RequestRetry(ctx, op.p.Name, pos)
				if errors.Is(err, store.ErrNoDeadLetter) {
					return &usageError{msg: err.Error()}
				}
				if err != nil {
					return err
				}
				if err := op.notify(ctx, store.RetryChannel); err != nil {
					fmt.Fprintf(e.stderr, "warning: the leader could not be notified (%v); it handles the request when it next starts\n", err)
				}
				fmt.Fprintf(e.stdout, "retry of %d dead letter%s of %s requested\n", len(requested), plural(len(requested)), name)
				if state != stateRunning {
					return fmt.Errorf("no replica leads %s now (%s): the request stays, and the next leader applies it when it starts; `projectord dead-letters list %s` shows it as requested",
						name, state, name)
				}
				return waitRetried(ctx, e.stdout, target, requested, timeout)
			})
		},
	}
	cmd.Flags().Int64Var(&position, "position", 0, "the position of the dead letter to retry (see dead-letters list)")
	cmd.Flags().BoolVar(&all, "all", false, "retry every dead letter of the projector")
	cmd.Flags().DurationVar(&timeout, "timeout", defaultRetryTimeout, "how long to wait for the leader to handle the request")
	return cmd
}

// retryPoll is how often `dead-letters retry` looks at the rows it asked
// for: a handful of rows by primary key, from one operator command.
const retryPoll = 100 * time.Millisecond

// waitRetried waits until the leader has handled every requested row, or
// until timeout, and reports each position.
func waitRetried(ctx context.Context, w io.Writer, t *store.Target, requested []store.DeadLetterRow, timeout time.Duration) error {
	ids := make([]int64, len(requested))
	asked := map[int64]store.DeadLetterRow{}
	for i, r := range requested {
		ids[i], asked[r.ID] = r.ID, r
	}
	deadline := time.Now().Add(timeout)
	var left []store.DeadLetterRow
	for {
		var err error
		if left, err = t.DeadLettersByID(ctx, ids); err != nil {
			return err
		}
		pending := 0
		for _, r := range left {
			if handled(r, asked[r.ID]) {
				continue
			}
			pending++
		}
		if pending == 0 || !time.Now().Before(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(retryPoll):
		}
	}
	byID := map[int64]store.DeadLetterRow{}
	for _, r := range left {
		byID[r.ID] = r
	}
	// A row is gone when the leader applied its event, and also when it
	// was discarded or cleared by a reset meanwhile: only the leader's
	// record tells the first apart.
	wasApplied, err := t.RetryApplied(ctx, ids)
	if err != nil {
		return err
	}
	applied, failed, pending, gone := 0, 0, 0, 0
	for _, r := range requested {
		now, ok := byID[r.ID]
		switch {
		case !ok && wasApplied[r.ID]:
			applied++
			fmt.Fprintf(w, "  position %d: applied\n", r.Cursor.Position)
		case !ok:
			gone++
			fmt.Fprintf(w, "  position %d: gone without being applied (discarded, or cleared by a reset)\n", r.Cursor.Position)
		case handled(now, r):
			failed++
			fmt.Fprintf(w, "  position %d: failed again: %s\n", r.Cursor.Position, printable(oneLine(now.Error)))
		default:
			pending++
			fmt.Fprintf(w, "  position %d: not handled yet\n", r.Cursor.Position)
		}
	}
	if gone > 0 {
		fmt.Fprintf(w, "%d applied, %d failed again, %d not handled yet, %d gone without being applied\n", applied, failed, pending, gone)
	} else {
		fmt.Fprintf(w, "%d applied, %d failed again, %d not handled yet\n", applied, failed, pending)
	}
	switch {
	case pending > 0:
		return fmt.Errorf("the leader did not handle %d of the requested dead letters within %s; the requests stay and are handled later", pending, timeout)
	case failed > 0:
		return fmt.Errorf("%d of the retried events failed again; their dead letters stay, with the new error", failed)
	case gone > 0:
		return fmt.Errorf("%d of the requested dead letters were removed (discarded, or cleared by a reset) before the leader applied them; their events were not applied", gone)
	}
	return nil
}

// handled says whether the leader handled now (the row as it is) after the
// request that returned asked: its request is cleared, and it was retried
// since.
func handled(now, asked store.DeadLetterRow) bool {
	return now.RetryRequestedAt == nil && now.RetriedAt != nil && asked.RetryRequestedAt != nil &&
		!now.RetriedAt.Before(*asked.RetryRequestedAt)
}

func newDeadLettersDiscardCmd(e *env, g *globalFlags) *cobra.Command {
	var position int64
	var yes bool
	cmd := &cobra.Command{
		Use:   "discard PROJECTOR --position P --yes",
		Short: "Delete one dead letter: its event is then never applied by the projector",
		Long: `Delete the projector's dead letter at --position P. The event stays in the
source, but this projector never applies it (short of a reset). --yes
confirms; without it nothing changes.`,
		Example: "  projectord dead-letters discard order_totals --position 1234 --yes",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("position") {
				return &usageError{msg: "say which dead letter to discard: --position P"}
			}
			op, err := loadProjector(cmd, g, args[0])
			if err != nil {
				return err
			}
			name := printable(op.p.Name)
			if !yes {
				return &usageError{msg: fmt.Sprintf("discard deletes the dead letter of %s at position %d, and its event is not applied: add --yes to confirm", name, position)}
			}
			return op.withTarget(cmd.Context(), func(t *store.Target) error {
				rows, err := t.DiscardDeadLetter(cmd.Context(), op.p.Name, position)
				if errors.Is(err, store.ErrNoDeadLetter) {
					return &usageError{msg: err.Error()}
				}
				if err != nil {
					return err
				}
				for _, r := range rows {
					fmt.Fprintf(e.stdout, "discarded the dead letter of %s at position %d (%s, stream %s)\n",
						name, r.Cursor.Position, printable(dash(r.EventType)), printable(dash(r.StreamID)))
				}
				return nil
			})
		},
	}
	cmd.Flags().Int64Var(&position, "position", 0, "the position of the dead letter to discard (see dead-letters list)")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm deleting the dead letter")
	return cmd
}

// state reads the projector's state as `projectord status` shows it.
func (op *projectorOp) state(ctx context.Context) (string, error) {
	pools := map[string]*pgxpool.Pool{}
	defer func() {
		for _, p := range pools {
			p.Close()
		}
	}()
	doc, err := readStatus(ctx, op.cfg, pools)
	if err != nil {
		return "", err
	}
	for _, p := range doc.Projectors {
		if p.Name == op.p.Name {
			return p.State, nil
		}
	}
	return "", fmt.Errorf("projector %s is missing from the status", op.p.Name)
}
