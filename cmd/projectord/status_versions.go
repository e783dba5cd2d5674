package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/projectord/projectord/internal/store"
)

// stateSuperseded: a newer version of the projector than the configured
// one is live; no replica runs the configured one again.
const stateSuperseded = "superseded"

// versionDoc is one version of a projector (README, "Rebuild without
// downtime"), in every target database status reads.
type versionDoc struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	// Checkpoint is its checkpoint row (and lock) name.
	Checkpoint string `json:"checkpoint"`
	// State: live, building (newer than the live one, catching up),
	// superseded or retired.
	State      string     `json:"state"`
	Live       bool       `json:"live"`
	CreatedAt  time.Time  `json:"created_at"`
	SetupAt    *time.Time `json:"setup_at"`
	PromotedAt *time.Time `json:"promoted_at"`
	RetiredAt  *time.Time `json:"retired_at"`
	LagEvents  int64      `json:"lag_events"`
	EventsRate float64    `json:"events_per_second"`
	// CatchUpSeconds estimates, for a building version, how long it needs
	// to catch up at the rate it has applied events since it was created;
	// null when it has not applied any yet, or is not building.
	CatchUpSeconds *float64 `json:"catch_up_seconds"`
}

// versionLag is what status needs to measure one version's lag.
type versionLag func(ctx context.Context, cp store.Checkpoint) (int64, error)

// readVersions lists the versions recorded in t's database, with lag and,
// for building versions, an estimate of the time to catch up. A schema
// without versions (older than migration 0008) has none.
func readVersions(ctx context.Context, t *store.Target, cps map[string]store.Checkpoint, lag versionLag, now time.Time) ([]versionDoc, error) {
	recs, err := t.Versions(ctx)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]versionDoc, 0, len(recs))
	for _, r := range recs {
		vd := versionDoc{Name: r.Name, Version: r.Version, Checkpoint: r.Checkpoint, State: r.State(), Live: r.IsLive(),
			CreatedAt: r.CreatedAt, SetupAt: r.SetupAt, PromotedAt: r.PromotedAt, RetiredAt: r.RetiredAt}
		if c, ok := cps[r.Checkpoint]; ok && vd.State != "retired" && vd.State != stateSuperseded {
			n, err := lag(ctx, c)
			if err != nil {
				return nil, fmt.Errorf("projector %s version %d: %w", r.Name, r.Version, err)
			}
			vd.LagEvents = n
			if secs := now.Sub(r.CreatedAt).Seconds(); secs > 0 && c.EventsApplied > 0 {
				vd.EventsRate = float64(c.EventsApplied) / secs
				if vd.State == "building" {
					eta := float64(n) / vd.EventsRate
					vd.CatchUpSeconds = &eta
				}
			}
		}
		out = append(out, vd)
	}
	return out, nil
}

// printVersions prints the versions table, when any projector has more
// than one version.
func printVersions(w io.Writer, vs []versionDoc) {
	count := map[string]int{}
	for _, v := range vs {
		count[v.Name]++
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := false
	for _, v := range vs {
		if count[v.Name] < 2 {
			continue
		}
		if !header {
			fmt.Fprintln(w)
			fmt.Fprintln(tw, "PROJECTOR\tVERSION\tSTATE\tLAG\tCATCH-UP\tPROMOTED\tRETIRED")
			header = true
		}
		eta, promoted, retired := "-", "-", "-"
		if v.CatchUpSeconds != nil {
			eta = "~" + age(*v.CatchUpSeconds)
		}
		if v.PromotedAt != nil {
			promoted = v.PromotedAt.UTC().Format(time.RFC3339)
		}
		if v.RetiredAt != nil {
			retired = v.RetiredAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", printable(v.Name), v.Version, v.State, v.LagEvents, eta, promoted, retired)
	}
	_ = tw.Flush()
}
