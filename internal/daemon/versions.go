package daemon

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// Keyed returns cfg with each projector named by its version's checkpoint
// key (store.VersionKey): its own name for version 1, as before versions
// existed, and "name@vN" for a newer version, so that everything a replica
// keys by projector (locks, checkpoints, supervisors, status, metric
// labels) tells a version being built from the live one.
func Keyed(cfg *config.Config) *config.Config {
	out := *cfg
	out.Projectors = make([]config.Projector, len(cfg.Projectors))
	for i, p := range cfg.Projectors {
		// Idempotent: a name that is already its version's key stays.
		if n, v := store.ParseVersionKey(p.Name); v != p.EffectiveVersion() || store.VersionKey(n, v) != p.Name {
			p.Name = store.VersionKey(p.Name, p.EffectiveVersion())
		}
		out.Projectors[i] = p
	}
	return &out
}

// VersionOf is the version a (keyed) projector runs.
func VersionOf(p config.Projector) store.Version {
	name, version := store.ParseVersionKey(p.Name)
	v := store.Version{Name: name, Version: version}
	if p.Sink.SQL != nil {
		v.Setup, v.Promote, v.Retire = p.Sink.SQL.Setup, p.Sink.SQL.Promote, p.Sink.SQL.Retire
	}
	return v
}

// onPromote stops, on this replica, every version of the projector older
// than the one just promoted: the leader of one steps down at once (instead
// of at its next commit, which advance() would refuse), and its supervisor
// then finds it superseded.
func (d *Daemon) onPromote(payload string) {
	name, v, _ := strings.Cut(payload, " ")
	promoted, err := strconv.Atoi(v)
	if err != nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.backend != nil {
		d.backend.PromotionAnnounced()
	}
	for key, s := range d.supervisors {
		if n, version := store.ParseVersionKey(key); n == name && version < promoted {
			d.log.Info("a newer version was promoted; stopping this one", zap.String("projector", key), zap.Int("live", promoted))
			s.Restart()
		}
	}
}

// wakeHaltedSuperseded makes this replica's halted supervisor of key, a
// version older than the live one, try again: its next attempt finds it
// superseded, and it reports that instead of halted (whose alerts would
// keep firing for a version nobody will resume). The promotion's NOTIFY
// does the same at once; this catches a replica that missed it.
func (d *Daemon) wakeHaltedSuperseded(key string) {
	d.mu.Lock()
	s := d.supervisors[key]
	d.mu.Unlock()
	if s != nil && s.State() == runner.StateHalted {
		s.Wake()
	}
}

// versionRate is a version's progress at the last refresh.
type versionRate struct {
	applied int64
	at      time.Time
	rate    float64
}

// rateWeight is how much the latest refresh counts in a version's
// smoothed rate: recent enough to follow a change of load within a few
// refreshes, smooth enough that one slow batch does not swing the estimate.
const rateWeight = 0.3

// collectVersions reads every version recorded in the target databases of
// this replica's projectors, with the lag of the ones that are not retired
// or superseded (from projectors, the snapshot's, when it is one of them;
// measured over every event type otherwise) and, for a building version, an
// estimate of its time to catch up at its recent rate.
func (d *Daemon) collectVersions(ctx context.Context, b *runner.PGBackend, projectors []runner.ProjectorStatus, head store.Cursor) ([]runner.VersionStatus, error) {
	byKey := make(map[string]runner.ProjectorStatus, len(projectors))
	for _, p := range projectors {
		byKey[p.Name] = p
	}
	if d.vrates == nil {
		d.vrates = map[string]versionRate{}
	}
	now := time.Now()
	seen := map[*store.Target]bool{}
	var out []runner.VersionStatus
	for _, p := range d.cfg.Projectors {
		t := b.Target(p.Name)
		if t == nil || seen[t] {
			continue
		}
		seen[t] = true
		recs, err := t.Versions(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range recs {
			vs := runner.VersionStatus{Projector: r.Name, Version: r.Version, Checkpoint: r.Checkpoint, State: r.State(),
				Live: r.IsLive(), PromotedAt: r.PromotedAt, RetiredAt: r.RetiredAt}
			if r.Version < r.Live {
				d.wakeHaltedSuperseded(r.Checkpoint)
			}
			if vs.State == "live" || vs.State == "building" {
				applied, err := d.versionProgress(ctx, b, t, r.Checkpoint, byKey, head, &vs)
				if err != nil {
					return nil, err
				}
				prev, ok := d.vrates[r.Checkpoint]
				cur := versionRate{applied: applied, at: now}
				if ok && now.After(prev.at) && applied >= prev.applied {
					inst := float64(applied-prev.applied) / now.Sub(prev.at).Seconds()
					cur.rate = inst
					if prev.rate > 0 {
						cur.rate = rateWeight*inst + (1-rateWeight)*prev.rate
					}
				}
				d.vrates[r.Checkpoint] = cur
				vs.EventsPerSecond = cur.rate
				if vs.State == "building" && cur.rate > 0 {
					eta := float64(vs.LagEvents) / cur.rate
					vs.CatchUpSeconds = &eta
				}
			}
			out = append(out, vs)
		}
	}
	return out, nil
}

// versionProgress sets vs's lag and returns its events applied.
func (d *Daemon) versionProgress(ctx context.Context, b *runner.PGBackend, t *store.Target, key string,
	byKey map[string]runner.ProjectorStatus, head store.Cursor, vs *runner.VersionStatus) (int64, error) {
	if p, ok := byKey[key]; ok {
		vs.LagEvents = p.LagEvents
		return p.EventsApplied, nil
	}
	c, ok, err := t.Load(ctx, key)
	if err != nil || !ok {
		return 0, err
	}
	if c.Cursor.Less(head) {
		n, _, err := b.Reader.Lag(ctx, c.Cursor, store.Filter{PositionFloor: c.PositionFloor})
		if err != nil {
			return 0, err
		}
		vs.LagEvents = n
	}
	return c.EventsApplied, nil
}

// supersededKeys are the checkpoints of versions no replica runs again.
func supersededKeys(vs []runner.VersionStatus) map[string]bool {
	out := map[string]bool{}
	for _, v := range vs {
		if v.State == "superseded" || v.State == "retired" {
			out[v.Checkpoint] = true
		}
	}
	return out
}
