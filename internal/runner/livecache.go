package runner

import (
	"context"
	"sync"
	"time"

	"github.com/projectord/projectord/internal/store"
)

// liveMaxAge is how old a standby's view of the live versions may be. The
// turns of all a replica's standbys come together (the coordination
// session's Turn), so within one turn they share one read per target, and
// an idle standby's cost stays flat in its number of projectors. A stale
// answer is harmless: the claim checks again (registerVersion), and that
// check is the one that refuses.
const liveMaxAge = 500 * time.Millisecond

// liveVersions caches store.Target.LiveVersions per target.
type liveVersions struct {
	mu  sync.Mutex
	per map[*store.Target]*liveRead
}

type liveRead struct {
	// mu is held through the read, so callers of one turn wait for the
	// first one's answer instead of each asking.
	mu       sync.Mutex
	at       time.Time
	versions map[string]int
}

// of returns the live version of name in t, read at most liveMaxAge ago.
func (c *liveVersions) of(ctx context.Context, t *store.Target, name string) (int, error) {
	c.mu.Lock()
	if c.per == nil {
		c.per = map[*store.Target]*liveRead{}
	}
	r := c.per[t]
	if r == nil {
		r = &liveRead{}
		c.per[t] = r
	}
	c.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.versions == nil || time.Since(r.at) > liveMaxAge {
		v, err := t.LiveVersions(ctx)
		if err != nil {
			return 0, err
		}
		r.versions, r.at = v, time.Now()
	}
	return r.versions[name], nil
}

// forget drops what is known of t's live versions (a promotion was
// announced), so the next turn reads them again.
func (c *liveVersions) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.per = nil
}

// PromotionAnnounced tells the backend that a version was promoted (its
// NOTIFY), so standbys do not act on the live versions read before it.
func (b *PGBackend) PromotionAnnounced() { b.live.forget() }
