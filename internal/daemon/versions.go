package daemon

import (
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/config"
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
	for key, s := range d.supervisors {
		if n, version := store.ParseVersionKey(key); n == name && version < promoted {
			d.log.Info("a newer version was promoted; stopping this one", zap.String("projector", key), zap.Int("live", promoted))
			s.Restart()
		}
	}
}
