package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/projectord/projectord/internal/httpsink"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

var flagHTTPEvents = flag.Int("bench.http_events", 200_000, "events in the HTTP sink catch-up benchmark (a multiple of 5)")

const benchSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// ackReceiver acknowledges every request at once, after reading its body,
// and counts the bytes, so that neither side can skip sending.
type ackReceiver struct {
	url   string
	bytes atomic.Int64
}

func startAckReceiver(b *testing.B) *ackReceiver {
	b.Helper()
	r := &ackReceiver{}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testsupport.Port(b)))
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n, _ := io.Copy(io.Discard, req.Body)
		r.bytes.Add(n)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(l) }()
	b.Cleanup(func() { _ = srv.Close() })
	r.url = "http://" + l.Addr().String() + "/events"
	return r
}

// httpLoopCatchUp is the HTTP baseline: the pgx keyset read, each batch
// encoded as the same CloudEvents batch, signed the same way, and POSTed
// with plain net/http, one after another.
func httpLoopCatchUp(ctx context.Context, pool *pgxpool.Pool, client *http.Client, url, projector string, key []byte, batch int) (int, error) {
	buf := make([]store.Event, 0, batch)
	var body []byte
	var after store.Cursor
	n := 0
	for {
		var err error
		buf, err = readBatch(ctx, pool, after, batch, buf)
		if err != nil {
			return n, err
		}
		if len(buf) == 0 {
			return n, nil
		}
		body = httpsink.AppendBatch(body[:0], projector, 0, buf)
		id := httpsink.WebhookID(projector, 0, buf)
		ts := time.Now().Unix()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return n, err
		}
		req.Header["Content-Type"] = []string{httpsink.ContentType}
		req.Header["Webhook-Id"] = []string{id}
		req.Header["Webhook-Timestamp"] = []string{strconv.FormatInt(ts, 10)}
		req.Header["Webhook-Signature"] = []string{httpsink.Sign(key, id, ts, body)}
		resp, err := client.Do(req)
		if err != nil {
			return n, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return n, fmt.Errorf("receiver answered %s", resp.Status)
		}
		n += len(buf)
		after = buf[len(buf)-1].Cursor
	}
}

// BenchmarkCatchUpHTTPSink measures the catch-up of a backlog delivered to
// a receiver that acknowledges at once: projectord's HTTP sink (the loop,
// the fenced delivery record before each POST, the fenced checkpoint move
// after it) against a plain net/http loop posting the same bytes.
func BenchmarkCatchUpHTTPSink(b *testing.B) {
	events := *flagHTTPEvents
	if events%5 != 0 || events <= 0 {
		b.Fatalf("-bench.http_events must be a positive multiple of 5, got %d", events)
	}
	db := newBenchDB(b)
	last, loaded := db.loadOrders(b, events/5, 10)
	if loaded != events {
		b.Fatalf("loaded %d events, want %d", loaded, events)
	}
	recv := startAckReceiver(b)
	key, err := httpsink.ParseSecret(benchSecret)
	if err != nil {
		b.Fatal(err)
	}
	p := db.startProjectord(b, projectordOptions{})
	client := &http.Client{}
	if n, err := pgxCatchUp(b.Context(), db.pool, 1000); err != nil || n != events {
		b.Fatalf("warm-up read %d of %d events: %v", n, events, err)
	}
	for _, batch := range []int{500, 1000} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			baseline := func(r int) measurement {
				name := fmt.Sprintf("loop-%d-%d", batch, r)
				m, err := measure(b.Context(), labelPGX, func(ctx context.Context) (int, error) {
					return httpLoopCatchUp(ctx, db.pool, client, recv.url, name, key, batch)
				})
				if err != nil || m.events != events {
					b.Fatalf("net/http loop delivered %d of %d events: %v", m.events, events, err)
				}
				return m
			}
			proj := func(r int) measurement {
				name := fmt.Sprintf("http-%d-%d", batch, r)
				m := p.measureHTTPCatchUp(b, name, batch, recv.url, key, last, events)
				cp, ok, err := store.NewTarget(db.pool, setupTimeout).Load(b.Context(), name)
				if err != nil || !ok || cp.Cursor != last || cp.EventsApplied != int64(events) {
					b.Fatalf("projector %s: checkpoint %+v (found %v, err %v), want cursor %s and %d events applied", name, cp, ok, err, last, events)
				}
				return m
			}
			res := rounds(b, "net/http", "projectord", baseline, proj)
			reportRatio(b, "catch-up, HTTP sink vs net/http loop", fmt.Sprintf("(%d events; baseline: pgx read + net/http POST of the same bodies)", events), batch, 0.9, res)
		})
	}
}

// measureHTTPCatchUp is measureCatchUp for a projector with an HTTP sink.
func (p *projectord) measureHTTPCatchUp(b *testing.B, name string, batch int, url string, key []byte, last store.Cursor, events int) measurement {
	b.Helper()
	var took time.Duration
	var phases phaseStats
	m, _ := measure(b.Context(), labelProjectord, func(context.Context) (int, error) {
		sink, err := httpsink.New(httpsink.Config{Projector: name, URL: url, Key: key, Timeout: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		took, phases = p.catchUpWith(b, name, last, func(ctx context.Context) error {
			p.backend.AddHTTPProjector(name, store.NewTarget(p.pool, 30*time.Second), sink)
			return runner.Run(ctx, runner.Projector{Name: name, BatchSize: batch, Logger: p.log.Named(name)}, p.backend)
		})
		return events, nil
	})
	m.took, m.phases = took, phases
	b.Logf("%s: %d events in %s; %d reads (%s), %d commits (%s); CPU client %s, server %s", name, events, took.Round(time.Millisecond),
		phases.reads, time.Duration(phases.readNs).Round(time.Millisecond), phases.commits, time.Duration(phases.commitNs).Round(time.Millisecond),
		m.cpu.client.Round(time.Millisecond), m.cpu.server.Round(time.Millisecond))
	return m
}

// catchUpWith is catchUp with the projector started by run.
func (p *projectord) catchUpWith(b *testing.B, name string, last store.Cursor, run func(ctx context.Context) error) (time.Duration, phaseStats) {
	b.Helper()
	reached := make(chan time.Time, 1)
	hook := func(req *store.CommitRequest, at time.Time) {
		if !req.To.Less(last) {
			select {
			case reached <- at:
			default:
			}
		}
	}
	p.backend.onCommit.Store(&hook)
	defer p.backend.onCommit.Store(nil)
	p.backend.resetStats()
	ctx, cancel := context.WithCancel(context.WithoutCancel(b.Context()))
	r := &running{cancel: cancel, errc: make(chan error, 1)}
	start := time.Now()
	go pprof.Do(ctx, labelProjectord, func(ctx context.Context) { r.errc <- run(ctx) })
	var took time.Duration
	select {
	case at := <-reached:
		took = at.Sub(start)
	case err := <-r.errc:
		b.Fatalf("projector %s ended before catching up: %v", name, err)
	case <-time.After(runTimeout):
		r.cancel()
		b.Fatalf("projector %s did not reach %s within %s", name, last, runTimeout)
	}
	st := p.backend.stats()
	r.stop(b)
	return took, st
}
