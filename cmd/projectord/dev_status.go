package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/projectord/projectord/internal/demo"
	"github.com/projectord/projectord/internal/runner"
)

// devStatus prints dev's status lines: one for the generator and one per
// projector, from the daemon's periodic snapshot. Rates are computed
// between snapshots, so a snapshot printed twice does not read as a stall.
type devStatus struct {
	w     io.Writer
	procs map[string]rateSample
	gen   rateSample
}

// rateSample is a counter at a moment and the rate last derived from it.
type rateSample struct {
	at    time.Time
	count int64
	rate  float64
}

// next returns the sample after s when count was seen at at.
func (s rateSample) next(at time.Time, count int64) rateSample {
	if s.at.IsZero() {
		return rateSample{at: at, count: count}
	}
	if !at.After(s.at) {
		return s
	}
	return rateSample{at: at, count: count, rate: float64(count-s.count) / at.Sub(s.at).Seconds()}
}

// newDevStatus returns a printer for a generator started at start.
func newDevStatus(w io.Writer, start time.Time) *devStatus {
	return &devStatus{w: w, procs: map[string]rateSample{}, gen: rateSample{at: start}}
}

// print writes one block of status lines, e.g.
//
//	15:04:05 generator          appended   3712 events    201 ev/s    612 orders    480 shipped
//	15:04:05 order_totals       leader     pos   3710/3712    lag     2 ev   0.01s    199 ev/s
func (d *devStatus) print(now time.Time, snap runner.Snapshot, gen demo.Stats) {
	clock := now.Format(time.TimeOnly)
	var b strings.Builder
	d.gen = d.gen.next(now, gen.Events)
	fmt.Fprintf(&b, "%s %-18s appended %6d events %6.0f ev/s %6d orders %6d shipped\n",
		clock, "generator", gen.Events, d.gen.rate, gen.Orders, gen.Shipped)
	for _, p := range snap.Projectors {
		r := d.procs[p.Name].next(snap.TakenAt, p.EventsApplied)
		d.procs[p.Name] = r
		state := string(p.State)
		if state == "" {
			state = "starting"
		}
		// The snapshot reads the head before the checkpoints, so a
		// projector can be past the head it shows; it is at least there.
		head := max(p.Head, p.Position)
		fmt.Fprintf(&b, "%s %-18s %-10s pos %6d/%-6d lag %5d ev %6.2fs %6.0f ev/s",
			clock, printable(p.Name), state, p.Position, head, p.LagEvents, p.LagSeconds, r.rate)
		if p.LastError != "" {
			fmt.Fprintf(&b, "  error: %s", truncate(printable(p.LastError), 100))
		}
		b.WriteByte('\n')
	}
	if snap.Error != "" {
		fmt.Fprintf(&b, "%s status: %s\n", clock, truncate(printable(snap.Error), 120))
	}
	_, _ = io.WriteString(d.w, b.String())
}

// caughtUp reports whether snap shows every projector with nothing left to
// apply.
func caughtUp(snap runner.Snapshot) bool {
	if snap.Error != "" || len(snap.Projectors) == 0 {
		return false
	}
	for _, p := range snap.Projectors {
		if p.LagEvents != 0 || p.Status == "unknown" {
			return false
		}
	}
	return true
}
