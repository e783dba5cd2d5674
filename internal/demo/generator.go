package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"
)

// Options configure a Generator.
type Options struct {
	// Rate is the events per second of all writers together. 0 means as
	// fast as the writers can append. Default (negative is an error): 0.
	Rate float64
	// Writers is how many goroutines append concurrently, each on its own
	// connection with its own orders. Default 4: enough for transactions to
	// commit out of position order, as they do in a real application.
	Writers int
	// Limit stops the generator after this many events; 0 means no limit.
	Limit int64
	// QueryTimeout bounds one append. Default 5s.
	QueryTimeout time.Duration
	// Seed makes the orders reproducible; 0 means a random seed. Two runs
	// against the same database need different seeds (order ids repeat).
	Seed uint64
	// Logger receives retries and dropped orders. Default: none.
	Logger *zap.Logger
}

// Stats counts what a Generator appended.
type Stats struct {
	Events  int64 // events committed
	Orders  int64 // orders placed
	Shipped int64 // orders completed
	Retries int64 // appends that failed and were retried
}

// Generator appends the demo's e-commerce stream to EventsTable.
//
// Start it, Stop it: Start returns at once and the writers run until Stop,
// the context ends or Limit is reached (then Done closes). An append in
// flight when stopping is finished, not cancelled, so every event a writer
// counted is committed.
type Generator struct {
	pool   *pgxpool.Pool
	opts   Options
	log    *zap.Logger
	insert string

	events, orders, shipped, retries atomic.Int64
	reserved                         atomic.Int64 // events claimed against Limit

	mu      sync.Mutex
	started bool
	cancel  context.CancelCauseFunc
	done    chan struct{}
}

// errStopped is the cause of a stop through Stop.
var errStopped = errors.New("generator stopped")

// NewGenerator returns a generator writing through pool. It checks opts and
// touches no database.
func NewGenerator(pool *pgxpool.Pool, opts Options) (*Generator, error) {
	if opts.Rate < 0 {
		return nil, fmt.Errorf("rate must be 0 (unlimited) or positive, not %g", opts.Rate)
	}
	if opts.Writers == 0 {
		opts.Writers = 4
	}
	if opts.Writers < 0 {
		return nil, fmt.Errorf("writers must be positive, not %d", opts.Writers)
	}
	if opts.Limit < 0 {
		return nil, fmt.Errorf("limit must be 0 (none) or positive, not %d", opts.Limit)
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 5 * time.Second
	}
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64()
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Generator{pool: pool, opts: opts, log: log, done: make(chan struct{}),
		insert: "INSERT INTO " + quoteTable(EventsTable) +
			" (stream_id, stream_version, event_type, data, metadata) VALUES ($1, $2, $3, $4, $5)"}, nil
}

// Start starts the writers and returns. Calling it again does nothing.
func (g *Generator) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.started {
		return nil
	}
	g.started = true
	ctx, g.cancel = context.WithCancelCause(ctx)
	var tokens <-chan struct{}
	var wg sync.WaitGroup
	if g.opts.Rate > 0 {
		ch := make(chan struct{}, max(g.opts.Writers, int(g.opts.Rate/pacerHz)+1))
		tokens = ch
		wg.Go(func() { pace(ctx, g.opts.Rate, ch) })
	}
	var writers sync.WaitGroup
	for i := range g.opts.Writers {
		writers.Go(func() {
			w := &writer{g: g, id: i + 1, tokens: tokens,
				shop: shop{rnd: rand.New(rand.NewPCG(g.opts.Seed, uint64(i)))}}
			w.run(ctx)
		})
	}
	go func() {
		writers.Wait()
		g.cancel(errStopped) // ends the pacer once Limit is reached
		wg.Wait()
		close(g.done)
	}()
	return nil
}

// Stop stops the writers after the appends in flight and waits for them.
// It is safe to call more than once, and before Start.
func (g *Generator) Stop() {
	g.mu.Lock()
	started := g.started
	if !started {
		g.started = true // a later Start does nothing
		close(g.done)
	}
	g.mu.Unlock()
	if started {
		g.cancel(errStopped)
	}
	<-g.done
}

// Done is closed when every writer has returned: after Stop, when the
// Start context ended, or when Limit events were appended.
func (g *Generator) Done() <-chan struct{} { return g.done }

// Stats returns the counts so far.
func (g *Generator) Stats() Stats {
	return Stats{Events: g.events.Load(), Orders: g.orders.Load(), Shipped: g.shipped.Load(), Retries: g.retries.Load()}
}

// pacerHz is how often the pacer releases the events that are due. Finer
// adds wake-ups without making the rate more even at the default 200/s.
const pacerHz = 100

// pace sends one token per event, rate per second on average, into tokens.
// What is due is computed from the start time, so ticks that come late do
// not lower the rate; tokens the writers are too slow to take are dropped
// rather than saved up, so a stall is not followed by a burst.
func pace(ctx context.Context, rate float64, tokens chan<- struct{}) {
	t := time.NewTicker(time.Second / pacerHz)
	defer t.Stop()
	start := time.Now()
	var sent int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := int64(rate * now.Sub(start).Seconds())
			for sent < due {
				select {
				case tokens <- struct{}{}:
					sent++
				default:
					sent = due // writers are behind: drop the rest
				}
			}
		}
	}
}

// writer appends the events of its own orders, one per transaction.
type writer struct {
	g      *Generator
	id     int
	tokens <-chan struct{} // nil: unpaced
	shop   shop
}

func (w *writer) run(ctx context.Context) {
	g := w.g
	for {
		if g.opts.Limit > 0 && g.reserved.Add(1) > g.opts.Limit {
			return
		}
		if w.tokens != nil {
			select {
			case <-ctx.Done():
				return
			case <-w.tokens:
			}
		} else if ctx.Err() != nil {
			return
		}
		ev, commit := w.shop.next()
		if err := w.append(ctx, ev); err != nil {
			if g.opts.Limit > 0 {
				g.reserved.Add(-1)
			}
			if ctx.Err() != nil {
				return
			}
			// Only a conflict gets here: someone else writes this stream.
			g.log.Warn("dropping order", zap.String("stream", ev.stream), zap.Error(err))
			w.shop.dropStream(ev.stream)
			continue
		}
		commit()
		g.events.Add(1)
		switch ev.typ {
		case OrderPlaced:
			g.orders.Add(1)
		case ShipmentDispatched:
			g.shipped.Add(1)
		}
	}
}

// append writes ev, retrying transient failures with capped, jittered
// backoff until ctx ends. The insert itself is not cancelled by ctx, so a
// stop never leaves the outcome of an append unknown.
func (w *writer) append(ctx context.Context, ev event) error {
	g := w.g
	data, err := json.Marshal(ev.data)
	if err != nil {
		return err
	}
	meta, err := json.Marshal(metadata{CorrelationID: ev.stream, Writer: w.id, Generator: "projectord dev"})
	if err != nil {
		return err
	}
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.opts.QueryTimeout)
		_, err := g.pool.Exec(qctx, g.insert, ev.stream, ev.version, ev.typ, string(data), string(meta))
		cancel()
		if err == nil {
			return nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
			if attempt > 1 {
				return nil // an earlier attempt committed before its connection failed
			}
			return fmt.Errorf("version %d of %s already exists: %w", ev.version, ev.stream, err)
		}
		g.retries.Add(1)
		g.log.Warn("error appending event; retrying", zap.String("stream", ev.stream),
			zap.Int("attempt", attempt), zap.Duration("retry_in", delay), zap.Error(err))
		jittered := delay/2 + rand.N(delay/2+1)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(jittered):
		}
		delay = min(2*delay, 5*time.Second)
	}
}
