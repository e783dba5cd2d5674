package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

func newStatusCmd(e *env, g *globalFlags) *cobra.Command {
	var output string
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every projector's leader, position, lag and state, read from the database",
		Long: `Read the database (from any host; no daemon needed) and print, for every
configured projector: its leader node and since when, checkpoint position,
source head, lag in events and in seconds (age of the oldest unprocessed
event), recorded state and last error; then what holds the xmin horizon back,
if anything.`,
		Example: "  projectord status --config /etc/projectord/projectord.yaml\n  projectord status -o json\n  projectord status --watch",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return &usageError{msg: fmt.Sprintf("--output must be table or json, not %q", output)}
			}
			cfg, err := loadConfig(cmd, g)
			if err != nil {
				return err
			}
			pools := map[string]*pgxpool.Pool{}
			defer func() {
				for _, p := range pools {
					p.Close()
				}
			}()
			for {
				snap, err := readStatus(cmd.Context(), cfg, pools)
				if err != nil {
					return err
				}
				if watch && output == "table" {
					fmt.Fprint(e.stdout, "\033[H\033[2J")
				}
				if output == "json" {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					if err := enc.Encode(snap); err != nil {
						return err
					}
				} else {
					printStatus(e.stdout, snap)
				}
				if !watch {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh interval with --watch")
	return cmd
}

// readStatus builds a snapshot straight from the database.
func readStatus(ctx context.Context, cfg *config.Config, pools map[string]*pgxpool.Pool) (runner.Snapshot, error) {
	pool := func(url string) (*pgxpool.Pool, error) {
		if p, ok := pools[url]; ok {
			return p, nil
		}
		p, err := newPool(ctx, cfg, url)
		if err != nil {
			return nil, err
		}
		pools[url] = p
		return p, nil
	}
	src, err := pool(cfg.Database.URL)
	if err != nil {
		return runner.Snapshot{}, err
	}
	// Nothing is read from a schema another role planted (CheckTrust); the
	// source table is the one the daemon resolves.
	if err := store.CheckTrust(ctx, src); err != nil {
		return runner.Snapshot{}, err
	}
	source, err := runner.SourceOf(cfg.Source).Resolve(ctx, src)
	if err != nil {
		return runner.Snapshot{}, err
	}
	reader := store.NewReader(src, source, cfg.Database.QueryTimeout)
	head, _, err := reader.Newest(ctx)
	if err != nil {
		return runner.Snapshot{}, err
	}
	readable, _, err := reader.Head(ctx)
	if err != nil {
		return runner.Snapshot{}, err
	}
	h, err := store.HorizonHolder(ctx, src, cfg.Database.QueryTimeout)
	if err != nil {
		return runner.Snapshot{}, err
	}
	var targets []runner.StatusTarget
	byURL := map[string]*store.Target{}
	for _, p := range cfg.Projectors {
		url := p.Sink.SQL.TargetURL
		if url == "" {
			url = cfg.Database.URL
		}
		t, ok := byURL[url]
		if !ok {
			tp, err := pool(url)
			if err != nil {
				return runner.Snapshot{}, err
			}
			if err := store.CheckTrust(ctx, tp); err != nil {
				return runner.Snapshot{}, err
			}
			t = store.NewTarget(tp, cfg.Database.QueryTimeout)
			byURL[url] = t
		}
		// Lag counts the events a handler acts on, as the daemon's does.
		sink, err := store.CompileSQLSink(p.Sink.SQL.Handlers, p.Sink.SQL.Reset)
		if err != nil {
			return runner.Snapshot{}, fmt.Errorf("projector %s: %w", p.Name, err)
		}
		types, all := sink.HandledTypes()
		targets = append(targets, runner.StatusTargetOf(runner.ProjectorOf(p, cfg, nil, nil), t, types, all))
	}
	ps, err := runner.CollectStatus(ctx, reader, head, targets)
	if err != nil {
		return runner.Snapshot{}, err
	}
	return runner.Snapshot{TakenAt: time.Now(), Head: head.Position, HeadXID: head.XID, ReadableHead: readable.Position,
		Horizon: runner.HorizonStatus{AgeSeconds: h.Age.Seconds(), PID: h.PID, Prepared: h.Prepared}, Projectors: ps}, nil
}

func printStatus(w io.Writer, s runner.Snapshot) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTOR\tLEADER\tSINCE\tPOSITION\tHEAD\tLAG\tLAG(s)\tSTATE\tLAST ERROR")
	for _, p := range s.Projectors {
		leader, since := dash(printable(p.LeaderNode)), "-"
		if p.LeaderSince != nil {
			since = p.LeaderSince.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.1f\t%s\t%s\n", printable(p.Name), leader, since, p.Position, p.Head,
			p.LagEvents, p.LagSeconds, printable(p.Status), dash(truncate(printable(p.LastError), 80)))
	}
	_ = tw.Flush()
	if s.Horizon.AgeSeconds > 0 {
		holder := fmt.Sprintf("pid %d", s.Horizon.PID)
		if s.Horizon.Prepared != "" {
			holder = "prepared transaction " + printable(s.Horizon.Prepared)
		}
		fmt.Fprintf(w, "\nxmin horizon held for %.1fs by %s\n", s.Horizon.AgeSeconds, holder)
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// truncate shortens s to n runes, never inside a rune.
func truncate(s string, n int) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if utf8.RuneCountInString(s) > n {
		return string([]rune(s)[:n-1]) + "…"
	}
	return s
}
