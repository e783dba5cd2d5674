package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/store"
)

// ErrSuperseded means the projector's version is older than its live
// version: no replica runs it again (README, "Rebuild without downtime").
var ErrSuperseded = store.ErrSuperseded

// Promoter is optional. A backend that keeps versions of projectors is told
// when a leader is caught up, at a batch boundary (a short batch at the
// head), so it can promote a newer version and retire the older ones. An
// error matching ErrSuperseded ends the run for good; store.ErrFenced ends
// it as deposed; any other is reported, and the next boundary tries again.
type Promoter interface {
	CaughtUp(ctx context.Context, projector string, epoch int64) error
}

// caughtUp tells a Promoter that this leader is at the head.
func (l *loop) caughtUp(ctx context.Context) error {
	p, ok := l.b.(Promoter)
	if !ok {
		return nil
	}
	err := p.CaughtUp(ctx, l.p.Name, l.epoch)
	switch {
	case err == nil:
		return nil
	case context.Cause(ctx) != nil:
		return context.Cause(ctx)
	case errors.Is(err, ErrSuperseded):
		return err
	case errors.Is(err, store.ErrFenced):
		l.p.Observer.Error(l.p.Name, "fenced", err)
		return fmt.Errorf("%w: %v", ErrDeposed, err)
	}
	l.p.Observer.Error(l.p.Name, "version", err)
	l.log.Warn("error promoting or retiring a version; trying again at a later batch boundary", zap.Error(err))
	return nil
}

// versionRetry paces promotions and retirements that failed (a lock wait on
// a view readers hold, a retire SQL that fails), so a caught-up leader does
// not retry them at every batch: the first retry after versionRetry/4,
// doubling while they keep failing, up to versionRetryMax. A promotion that
// cannot have the view gives up within promote's short lock wait, and a
// report that holds the view for minutes then meets an attempt every few
// seconds, not every second.
const (
	versionRetry    = time.Second
	versionRetryMax = 4 * time.Second
)

// failed paces the next attempt after a failure.
func (pv *pgVersion) failed() {
	pv.backoff = min(max(2*pv.backoff, versionRetry/4), versionRetryMax)
	pv.next = time.Now().Add(pv.backoff)
}

// pgVersion is what the backend knows of one version it runs.
type pgVersion struct {
	v store.Version

	mu sync.Mutex
	// promoted: v is live and its promote ran; settled: and nothing older
	// is left to retire, so CaughtUp has nothing more to do.
	promoted, settled bool
	next              time.Time
	backoff           time.Duration
}

// AddVersion registers the version that projector (its checkpoint key,
// store.VersionKey) runs. A projector without one runs as before versions.
func (b *PGBackend) AddVersion(projector string, v store.Version) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.versions == nil {
		b.versions = map[string]*pgVersion{}
	}
	b.versions[projector] = &pgVersion{v: v}
}

func (b *PGBackend) version(projector string) *pgVersion {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.versions[projector]
}

func supersededBy(v store.Version, live int) error {
	return fmt.Errorf("%w: version %d of %s is live, this replica is configured with version %d and never runs it again",
		ErrSuperseded, live, v.Name, v.Version)
}

// checkLive refuses a version older than the live one before its lock is
// even taken, so a replica still configured with it during a rolling
// deploy never leads it. cached: a standby's turn, which may use what
// another projector's turn just read (liveVersions); otherwise the live
// version is read now.
func (b *PGBackend) checkLive(ctx context.Context, projector string, cached bool) error {
	pv := b.version(projector)
	if pv == nil {
		return nil
	}
	t, _, err := b.target(projector)
	if err != nil {
		return err
	}
	var live int
	if cached {
		live, err = b.live.of(ctx, t, pv.v.Name)
	} else {
		live, err = t.LiveVersion(ctx, pv.v.Name)
	}
	if err != nil {
		return err
	}
	if live > pv.v.Version {
		return supersededBy(pv.v, live)
	}
	return nil
}

// registerVersion registers the version before its claim; a version older
// than the live one is refused without bumping its epoch.
func (b *PGBackend) registerVersion(ctx context.Context, projector string) error {
	pv := b.version(projector)
	if pv == nil {
		return nil
	}
	t, _, err := b.target(projector)
	if err != nil {
		return err
	}
	rec, err := t.EnsureVersion(ctx, pv.v)
	if err != nil {
		return err
	}
	if rec.Live > pv.v.Version {
		return supersededBy(pv.v, rec.Live)
	}
	pv.mu.Lock()
	pv.promoted = rec.IsLive() && rec.PromotedAt != nil
	pv.settled = false
	pv.mu.Unlock()
	return nil
}

// setupVersion runs the version's setup under the new epoch, once.
func (b *PGBackend) setupVersion(ctx context.Context, projector string, epoch int64) error {
	pv := b.version(projector)
	if pv == nil {
		return nil
	}
	t, _, err := b.target(projector)
	if err != nil {
		return err
	}
	ran, err := t.Setup(ctx, pv.v, epoch)
	if err == nil && ran && b.Logger != nil {
		b.Logger.Info("version set up", zap.String("projector", pv.v.Name), zap.Int("version", pv.v.Version))
	}
	return err
}

// CaughtUp implements Promoter: a version that is not live yet is promoted
// (its promote SQL runs in the transaction that makes it live), then the
// versions it replaced are retired (its retire SQL, once).
func (b *PGBackend) CaughtUp(ctx context.Context, projector string, epoch int64) error {
	pv := b.version(projector)
	if pv == nil {
		return nil
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	if pv.settled || time.Now().Before(pv.next) {
		return nil
	}
	t, _, err := b.target(projector)
	if err != nil {
		return err
	}
	if !pv.promoted {
		promoted, err := t.Promote(ctx, pv.v, epoch)
		if errors.Is(err, store.ErrBehindLive) {
			return nil // the next short batch reaches it
		}
		if err != nil {
			pv.failed()
			return err
		}
		pv.promoted, pv.backoff = true, 0
		if promoted && b.Logger != nil {
			b.Logger.Info("version promoted: it is live, and older versions stop on every replica",
				zap.String("projector", pv.v.Name), zap.Int("version", pv.v.Version))
		}
	}
	retired, err := t.Retire(ctx, pv.v, epoch)
	if err != nil {
		pv.failed()
		return err
	}
	if len(retired) > 0 && b.Logger != nil {
		b.Logger.Info("older versions retired", zap.String("projector", pv.v.Name), zap.Int("version", pv.v.Version),
			zap.Ints("retired", retired))
	}
	pv.settled = true
	return nil
}

// VersionStatus is one version of a projector, as /status and the metrics
// show it (README, "Rebuild without downtime").
type VersionStatus struct {
	// Projector is the configured name; Checkpoint its version's checkpoint
	// row (store.VersionKey), the name the rest of the status uses.
	Projector  string `json:"projector"`
	Version    int    `json:"version"`
	Checkpoint string `json:"checkpoint"`
	// State is live, building, superseded or retired (store.VersionRecord).
	State      string     `json:"state"`
	Live       bool       `json:"live"`
	PromotedAt *time.Time `json:"promoted_at,omitempty"`
	RetiredAt  *time.Time `json:"retired_at,omitempty"`
	LagEvents  int64      `json:"lag_events"`
	// EventsPerSecond is its recent progress, smoothed over refreshes;
	// CatchUpSeconds, for a building version that progresses, the lag over it.
	EventsPerSecond float64  `json:"events_per_second"`
	CatchUpSeconds  *float64 `json:"catch_up_seconds,omitempty"`
}

// supersededCommit turns a failed commit of a version that a newer one has
// replaced into the fence it is: the retire SQL of the newer version may
// have dropped the tables its handlers write, and a failure that never
// reaches advance() would otherwise be retried, holding the lock, forever.
func (b *PGBackend) supersededCommit(ctx context.Context, projector string, err error) error {
	if err == nil || errors.Is(err, store.ErrFenced) || b.version(projector) == nil || ctx.Err() != nil {
		// A commit cut short by its deadline or by the end of the lease is
		// not asked about: the loop must see the lease's end at once (a
		// partitioned leader would otherwise still report leading while
		// the question waits on the same unreachable server).
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if lerr := b.checkLive(cctx, projector, false); errors.Is(lerr, ErrSuperseded) {
		return fmt.Errorf("%w: %w (the batch failed: %v)", store.ErrFenced, lerr, err)
	}
	return err
}
