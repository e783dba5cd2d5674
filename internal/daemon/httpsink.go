package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/httpsink"
	"github.com/projectord/projectord/internal/store"
)

// httpProjector is an HTTP projector's sink and the target in database.url
// that holds its checkpoint.
type httpProjector struct {
	sink   *httpsink.Sink
	target *store.Target
}

// httpSinks makes the HTTP projectors' sinks, reading their secret and
// header files now: a file that cannot be read or parsed is a fatal
// configuration error naming the projector and the file, never its content.
// Their checkpoints share one target in database.url with no group commit:
// a group's transaction must not wait for a receiver.
func (d *Daemon) httpSinks(ctx context.Context, source *pgxpool.Pool) (map[string]httpProjector, error) {
	cfg := d.cfg
	out := map[string]httpProjector{}
	var t *store.Target
	for _, p := range cfg.Projectors {
		h := p.Sink.HTTP
		if h == nil {
			continue
		}
		c := httpsink.Config{Projector: p.Name, URL: h.URL, Timeout: httpTimeout(h), Stop: ctx,
			Observer: d.opts.HTTPObserver, Initial: p.OnError.Initial, Max: p.OnError.Max}
		var err error
		if h.SecretFile != "" {
			if c.Key, err = httpsink.LoadSecret(p.Name, h.SecretFile); err != nil {
				return nil, fmt.Errorf("%w: %v", errFatal, err)
			}
		}
		if h.HeadersFile != "" {
			if c.Headers, err = httpsink.LoadHeaders(p.Name, h.HeadersFile); err != nil {
				return nil, fmt.Errorf("%w: %v", errFatal, err)
			}
		}
		s, err := httpsink.New(c)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errFatal, err)
		}
		if t == nil {
			t = store.NewTarget(source, cfg.Database.QueryTimeout)
			if d.opts.OnCommit != nil {
				t.ObserveCommits(d.opts.OnCommit)
			}
		}
		out[p.Name] = httpProjector{sink: s, target: t}
	}
	return out, nil
}

func httpTimeout(h *config.HTTPSink) time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return config.DefaultHTTPTimeout
}

// commitTimeout bounds one commit of the projector's loop. An HTTP batch's
// commit is its delivery, retries included, and then the checkpoint move:
// room for a couple of requests on top of the statements.
func commitTimeout(p config.Projector, cfg *config.Config) time.Duration {
	if p.Sink.HTTP != nil {
		return cfg.Database.QueryTimeout + 2*httpTimeout(p.Sink.HTTP)
	}
	return cfg.Database.QueryTimeout
}
