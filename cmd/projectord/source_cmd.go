package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/daemon"
	"github.com/projectord/projectord/internal/store"
)

func newSourceCmd(e *env, g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "source",
		Short: "Work with the events table",
		Args:  cobra.NoArgs,
	}
	var apply, notify bool
	var lockTimeout time.Duration
	prepare := &cobra.Command{
		Use:   "prepare",
		Short: "Add what the events table still lacks: the xid8 column, the cursor index, optionally a NOTIFY trigger",
		Long: `Read the catalogue and print (with --apply, run) only the statements the events
table still needs, each with why and what it locks for how long; on a table
that has everything it prints that there is nothing to do. It connects to
resolve source.table as the daemon does (an unqualified name through the
connection's search_path) and prints the table it resolved to. What it may
add, never changing what the table already has:

  - a transaction_id xid8 column when there is none (existing rows get the
    constant xid 1, new rows their writer's transaction id); an existing one
    is used as it is;
  - for a preset whose store has no numeric position (eventcore), the
    position as an identity column: this rewrites the table under an ACCESS
    EXCLUSIVE lock (no trigger fires, no row is updated);
  - the cursor index, (transaction_id, position) or (position) under
    source.ordering: position, unless a valid index serves it under any name:
    built CONCURRENTLY on a plain table; on a partitioned table created ON ONLY
    on each partitioned level, built CONCURRENTLY on each leaf partition and
    attached bottom-up, so partitions created later get it by themselves.

With --apply every step that is not a concurrent build runs in its own
transaction under lock_timeout (--lock-timeout), so it never queues the
table's readers and writers behind it for longer: when the lock is not free
in time the step changes nothing, prepare exits naming the sessions holding
it, and re-running resumes from that step. Afterwards it verifies that the
column, a valid index and the trigger exist, and fails otherwise.
docs/sources.md lists what each step locks and how long it took on a table
of 1M rows.

--notify adds a statement-level trigger that NOTIFYs source.notify_channel,
so projectors wake without waiting for the next poll (set source.listen: true).
It is opt-in because NOTIFY serialises committing writers: on a 2-core machine
with PostgreSQL 15, 8 clients inserting one event per transaction fell from
11.8k to 5.1k transactions/s with the trigger. Polling stays the source of
truth either way.`,
		Example: "  projectord source prepare\n  projectord source prepare --notify --apply --lock-timeout 2s",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if lockTimeout < 0 || lockTimeout > time.Hour || lockTimeout > 0 && lockTimeout < time.Millisecond {
				return &usageError{msg: fmt.Sprintf("--lock-timeout %s: want 0 (wait as long as it takes) or 1ms to 1h", lockTimeout)}
			}
			cfg, _, err := setup(cmd, e, g)
			if err != nil {
				return err
			}
			// The table is resolved on the database, as the daemon resolves
			// it, so what is printed and altered is the table it reads.
			return withPool(cmd.Context(), cfg, cfg.Database.URL, func(pool *pgxpool.Pool) error {
				ctx := cmd.Context()
				src, err := daemon.SourceOf(cfg.Source).Resolve(ctx, pool)
				if err != nil {
					return err
				}
				if err := store.CheckTrust(ctx, pool); err != nil {
					return err
				}
				steps, err := store.PlanPrepare(ctx, pool, src, notify, cfg.Source.NotifyChannel)
				if err != nil {
					return err
				}
				if slices.ContainsFunc(steps, func(s store.PrepareStep) bool { return s.AddsTransactionColumn }) {
					if err := refuseReadProjectors(ctx, cfg, src); err != nil {
						return err
					}
				}
				fmt.Fprintf(e.stdout, "-- source table %s resolves to %s\n\n", printable(cfg.Source.Table), printable(src.QualifiedName()))
				if len(steps) == 0 {
					fmt.Fprintf(e.stdout, "-- Nothing to do: %s already has everything source prepare adds.\n", printable(src.QualifiedName()))
					if !apply {
						return nil
					}
				}
				for i, s := range steps {
					fmt.Fprintf(e.stdout, "-- %d/%d: %s\n-- locks: %s\n%s;\n\n", i+1, len(steps), s.Why, s.Locks, s.SQL)
				}
				if !apply {
					fmt.Fprintln(e.stdout, "-- Not applied. Re-run with --apply to execute these statements.")
					return nil
				}
				for i, s := range steps {
					start := time.Now()
					if err := store.ApplyPrepareStep(ctx, pool, s, lockTimeout); err != nil {
						return fmt.Errorf("error applying step %d/%d (%s): %w", i+1, len(steps), s.Why, err)
					}
					fmt.Fprintf(e.stdout, "-- step %d/%d done in %s\n", i+1, len(steps), time.Since(start).Round(time.Millisecond))
				}
				// IF NOT EXISTS skips an object whose name is taken, a failed
				// concurrent build leaves an invalid index, and a partition
				// created meanwhile leaves the parent's index invalid: check.
				if err := store.VerifyPrepared(ctx, pool, src, notify); err != nil {
					return err
				}
				if len(steps) == 0 {
					fmt.Fprintln(e.stdout, "-- Verified.")
					return nil
				}
				fmt.Fprintln(e.stdout, "-- Applied and verified.")
				return nil
			})
		},
	}
	prepare.Flags().BoolVar(&apply, "apply", false, "execute the statements instead of only printing them")
	prepare.Flags().BoolVar(&notify, "notify", false, "also create the opt-in NOTIFY trigger")
	prepare.Flags().DurationVar(&lockTimeout, "lock-timeout", 5*time.Second,
		"with --apply, give up a step (changing nothing) when its table lock is not granted within this long; 0 waits as long as it takes")
	cmd.AddCommand(prepare)
	return cmd
}

// refuseReadProjectors fails when a configured projector has read the
// source in xid8 order although its table lacks the xid8 column: the
// column was there and has been dropped (Marten's schema migrations drop
// columns they do not know). Adding it again gives every row xid 1, below
// those projectors' cursors, so the events they had not applied yet would
// never be read. Only a reset, which replays the table, is exact.
func refuseReadProjectors(ctx context.Context, cfg *config.Config, src store.Source) error {
	byURL := map[string][]string{}
	var urls []string
	for _, p := range cfg.Projectors {
		url := p.Sink.TargetURL()
		if url == "" {
			url = cfg.Database.URL
		}
		if _, ok := byURL[url]; !ok {
			urls = append(urls, url)
		}
		// The configured version's checkpoint (daemon.Keyed).
		byURL[url] = append(byURL[url], store.VersionKey(p.Name, p.EffectiveVersion()))
	}
	var read []string
	for _, url := range urls {
		err := withPool(ctx, cfg, url, func(pool *pgxpool.Pool) error {
			if exists, err := store.HasCheckpoints(ctx, pool); err != nil || !exists {
				return err // no checkpoints yet: nothing has read the table
			}
			if err := store.CheckTrust(ctx, pool); err != nil {
				return err
			}
			all, err := store.NewTarget(pool, cfg.Database.QueryTimeout).List(ctx)
			if err != nil {
				return err
			}
			for _, c := range all {
				if c.Ordering == store.OrderXID8 && !c.AtStart() && slices.Contains(byURL[url], c.Projector) {
					read = append(read, fmt.Sprintf("%s (cursor %s)", c.Projector, c.Cursor))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if len(read) == 0 {
		return nil
	}
	return fmt.Errorf("source table %s has no xid8 column %q, but projector %s read it in xid8 order: the column was there and has been dropped "+
		"(Marten's schema migrations drop columns they do not know). Adding it again gives every row xid 1, below those cursors, so the events "+
		"they had not applied would never be read. Reset them (projectord reset NAME --yes; they replay the table), then re-run source prepare",
		printable(src.QualifiedName()), printable(src.Columns.TransactionID), strings.Join(read, ", "))
}
