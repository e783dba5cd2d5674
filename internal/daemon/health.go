package daemon

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// SnapshotObserver is an optional Observer extension that receives each
// periodic snapshot (the metrics use it for head, lag and horizon).
type SnapshotObserver interface {
	Snapshot(runner.Snapshot)
}

// Live reports whether the daemon's loops are ticking. It never touches
// the database: a database outage makes the daemon unready, not dead.
func (d *Daemon) Live() (bool, []runner.Check) {
	now := time.Now()
	d.mu.Lock()
	b, started := d.backend, d.started
	refreshed := d.refreshLoop
	d.mu.Unlock()
	checks := []runner.Check{{Name: "process", OK: true}}
	if b == nil {
		return true, checks
	}
	// A loop that has not run for this long is stuck, whatever the database does.
	budget := func(interval time.Duration) time.Duration {
		return max(10*interval, d.cfg.Database.QueryTimeout+10*time.Second)
	}
	last := b.Watcher.LastLoop()
	if last.IsZero() {
		last = started
	}
	w := runner.Check{Name: "source_watcher", OK: now.Sub(last) < budget(d.cfg.Source.PollInterval)}
	if !w.OK {
		w.Detail = "no poll loop since " + last.Format(time.RFC3339)
	}
	if refreshed.IsZero() {
		refreshed = started
	}
	r := runner.Check{Name: "refresher", OK: now.Sub(refreshed) < budget(d.cfg.Metrics.RefreshInterval)}
	if !r.OK {
		r.Detail = "no refresh since " + refreshed.Format(time.RFC3339)
	}
	checks = append(checks, w, r)
	return w.OK && r.OK, checks
}

// Readiness reports whether this replica can do its work: configuration
// loaded, database reachable (a recent successful poll and a live
// coordination session) and not shutting down.
func (d *Daemon) Readiness() (bool, []runner.Check) {
	d.mu.Lock()
	b, stopping, bootErr := d.backend, d.stopping, d.bootErr
	d.mu.Unlock()
	checks := []runner.Check{{Name: "config", OK: true}}
	db := runner.Check{Name: "database", OK: b != nil}
	switch {
	case b == nil && bootErr != nil:
		// Probes are unauthenticated: the error's text (user, database,
		// host, a server message) goes to the log only.
		db.Detail = runner.WithClass("not ready; the error is in the log", bootErr)
	case b == nil:
		db.Detail = "connecting"
	default:
		polled, err := b.Watcher.LastPoll()
		fresh := max(5*time.Second, 5*d.cfg.Source.PollInterval)
		switch {
		case !b.Session.Up():
			db.OK, db.Detail = false, "coordination session down"
		case time.Since(polled) > fresh:
			db.OK = false
			db.Detail = "no successful source poll since " + polled.Format(time.RFC3339)
			if err != nil {
				db.Detail = runner.WithClass(db.Detail, err)
			}
		}
	}
	sd := runner.Check{Name: "shutdown", OK: !stopping}
	if stopping {
		sd.Detail = "shutting down"
	}
	checks = append(checks, db, sd)
	return db.OK && sd.OK, checks
}

// View returns the latest periodic snapshot and whether it is fresh: the
// last refresh succeeded, and not longer ago than staleAfter. What a
// replica that cannot reach the database last read is not what is so now:
// the metrics export nothing of a stale snapshot, and /status leaves it out.
func (d *Daemon) View() (runner.Snapshot, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.snapshot
	return s, d.snapshotOK && time.Since(s.TakenAt) <= d.staleAfter()
}

// staleAfter is how old a snapshot may be and still be served: three
// refresh intervals, plus twice what the last refresh took, so a database
// that is slow but answering does not make it flap. Called with d.mu held.
func (d *Daemon) staleAfter() time.Duration {
	return max(3*d.cfg.Metrics.RefreshInterval+2*d.refreshTook, 2*time.Second)
}

// Snapshot returns what /status serves: the latest periodic snapshot
// (refresh_interval old at most) with this replica's supervisor states. A
// stale one (View) keeps only the states: its leaders, positions and lag
// are no longer known.
func (d *Daemon) Snapshot() runner.Snapshot {
	s, fresh := d.View()
	s.Ready, _ = d.Readiness()
	s.Node = d.node
	states := d.States()
	if !s.TakenAt.IsZero() {
		at := s.TakenAt
		s.RefreshedAt = &at
	}
	if !fresh && len(s.Projectors) > 0 {
		s.Stale = true
		s.Head, s.HeadXID, s.ReadableHead, s.Horizon = 0, 0, 0, runner.HorizonStatus{}
		s.Projectors, s.Versions = nil, nil
	}
	if len(s.Projectors) == 0 {
		for _, p := range d.cfg.Projectors {
			s.Projectors = append(s.Projectors, runner.ProjectorStatus{Name: p.Name, Status: "unknown"})
		}
	} else {
		s.Projectors = append([]runner.ProjectorStatus(nil), s.Projectors...)
	}
	for i := range s.Projectors {
		s.Projectors[i].State = states[s.Projectors[i].Name]
	}
	s.Balance = d.BalanceStatus()
	return s
}

// BalanceStatus returns how the live replicas share the projectors, from
// this replica's coordination session; nil while its heartbeat is not
// fresh (what it read is no longer known to be so).
func (d *Daemon) BalanceStatus() *runner.BalanceStatus {
	b := d.Backend()
	if b == nil || !b.Session.Fresh() {
		return nil
	}
	return b.Balance.Status()
}

// Balance returns this replica's balancing figures, for the metrics.
func (d *Daemon) Balance() runner.BalanceStats {
	b := d.Backend()
	if b == nil {
		return runner.BalanceStats{}
	}
	st := runner.BalanceStats{HandOvers: b.Balance.HandOvers()}
	if s := d.BalanceStatus(); s != nil {
		st.Known, st.Members = true, len(s.Nodes)
		st.Target, st.TargetKnown = b.Balance.Target()
	}
	return st
}

// refresh computes a snapshot every metrics.refresh_interval. It costs one
// checkpoint query per target database, one horizon query, and a lag query
// only for projectors that are behind.
func (d *Daemon) refresh(ctx context.Context, b *runner.PGBackend, targets []runner.StatusTarget) {
	t := time.NewTicker(d.cfg.Metrics.RefreshInterval)
	defer t.Stop()
	var failing bool
	for {
		started := time.Now()
		snap := runner.Snapshot{TakenAt: started}
		readable, _ := b.Watcher.Head()
		snap.ReadableHead = readable.Position
		err := func() error {
			head, _, err := b.Reader.Newest(ctx)
			if err != nil {
				return err
			}
			snap.Head, snap.HeadXID = head.Position, head.XID
			h, err := b.Reader.HorizonHolder(ctx)
			if err != nil {
				return err
			}
			snap.Horizon = runner.HorizonStatus{AgeSeconds: h.Age.Seconds(), PID: h.PID, Prepared: h.Prepared}
			snap.Projectors, err = runner.CollectStatus(ctx, b.Reader, head, targets)
			if err != nil {
				return err
			}
			snap.Versions, err = d.collectVersions(ctx, b, snap.Projectors, head)
			return err
		}()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			snap.Error = err.Error()
			if !failing {
				d.log.Warn("error refreshing status", zap.Error(err))
			}
		}
		failing = err != nil
		d.mu.Lock()
		d.refreshLoop = time.Now()
		d.snapshotOK = err == nil
		if err == nil {
			// TakenAt is when the refresh ended: every value in it was
			// read by then.
			d.refreshTook = d.refreshLoop.Sub(started)
			snap.TakenAt = d.refreshLoop
			d.snapshot = snap
		} else {
			d.snapshot.Error = snap.Error
		}
		sups := d.supervisors
		d.mu.Unlock()
		if err == nil {
			wakeResumed(snap, sups)
			// Halted projectors are left out of the total the replicas
			// share: no replica can lead them. The checkpoint says so on
			// every replica alike.
			// So are superseded versions (versions.go).
			gone := supersededKeys(snap.Versions)
			for _, p := range snap.Projectors {
				b.Balance.SetActive(p.Name, p.Status != store.StatusHalted && !gone[p.Name])
			}
		}
		if so, ok := d.opts.Observer.(SnapshotObserver); ok && err == nil {
			so.Snapshot(snap)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// wakeResumed wakes the supervisors that saw their projector halted while
// the database no longer says so: it was resumed or reset, and the
// notification (ResumeChannel, ResetChannel) was missed, say while the
// coordination session was down. So a resume takes effect on every
// replica within a refresh interval at worst.
func wakeResumed(snap runner.Snapshot, sups map[string]*runner.Supervisor) {
	for _, p := range snap.Projectors {
		if s := sups[p.Name]; s != nil && p.Status != store.StatusHalted && s.State() == runner.StateHalted {
			s.Wake()
		}
	}
}

// LeasesFresh reports whether this replica's coordination session has
// heartbeated recently enough for its leases to be trusted.
func (d *Daemon) LeasesFresh() bool {
	b := d.Backend()
	return b != nil && b.Session.Fresh()
}
