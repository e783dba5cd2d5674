package daemon

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/httpsink"
	"github.com/projectord/projectord/internal/httpsink/sinktest"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

// httpConfig is tb.config with projector name's sink an HTTP one posting
// to url, signed with sinktest.Secret.
func (tb *pgBundle) httpConfig(t *testing.T, url string, p config.Projector) *config.Config {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(sinktest.Secret+"\n"), 0o600))
	p.Sink = config.Sink{SQL: &config.SQLSink{Handlers: recordHandler(p.Name)}}
	cfg := tb.config(t, p)
	cfg.Projectors[0].Sink = config.Sink{HTTP: &config.HTTPSink{URL: url, SecretFile: secret, Timeout: time.Second}}
	return cfg
}

// cursorOrder maps every event's position to its rank in cursor order.
func (tb *pgBundle) cursorOrder(t *testing.T) map[int64]int {
	t.Helper()
	rows, err := tb.pool.Query(tb.ctx, `SELECT global_position FROM events ORDER BY transaction_id, global_position`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[int64]int{}
	for rows.Next() {
		var p int64
		require.NoError(t, rows.Scan(&p))
		out[p] = len(out)
	}
	require.NoError(t, rows.Err())
	return out
}

// A receiver that refuses one event (422 naming it, or 400 naming none, so
// the batch is halved down to it) and fails now and then with 500: every
// other event is acknowledged, in cursor order, each under one webhook-id;
// the refused event is dead-lettered; the checkpoint reaches the end.
func TestPGHTTPSinkDeliversAndHandlesThePoisonEvent(t *testing.T) {
	t.Parallel()
	for _, named := range []bool{true, false} {
		t.Run(map[bool]string{true: "named", false: "halved"}[named], func(t *testing.T) {
			t.Parallel()
			tb := setupPG(t)
			tb.appendEvents(t, 300, 7, "A")
			var poison int64
			require.NoError(t, tb.pool.QueryRow(tb.ctx, `SELECT global_position FROM events ORDER BY 1 OFFSET 137 LIMIT 1`).Scan(&poison))
			var others atomic.Int32
			recv := sinktest.Start(t, func(r sinktest.Request) *sinktest.Answer {
				if slices.Contains(r.Positions, poison) {
					if named {
						return &sinktest.Answer{Status: 422, Body: `{"failed_position": ` + itoa(poison) + `}`}
					}
					return &sinktest.Answer{Status: 400}
				}
				if others.Add(1)%4 == 0 {
					return &sinktest.Answer{Status: 500}
				}
				return nil
			})
			cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 50,
				OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: "dead_letter"}})
			obs := &httpCounts{}
			tb.startDaemonWith(t, cfg, "node-a", func(o *Options) { o.HTTPObserver = obs })
			tb.waitCaughtUp(t, "hooks")

			require.Empty(t, recv.Check(tb.cursorOrder(t)))
			acked := recv.Acked()
			require.Len(t, acked, 299, "every event but the poison one acknowledged")
			require.False(t, acked[poison])
			letters := deadLetters(t, tb, "hooks")
			require.Len(t, letters, 1)
			require.Contains(t, letters[poison].Error, "refused the batch")
			require.Equal(t, 2, letters[poison].Attempts)
			cp := tb.checkpoint(t, "hooks")
			require.Equal(t, int64(299), cp.EventsApplied, "the checkpoint counts the acknowledged events")
			if !named {
				// Halving: requests holding the poison event shrink to it alone.
				var sizes []int
				for _, q := range recv.Requests() {
					if slices.Contains(q.Positions, poison) {
						sizes = append(sizes, len(q.Positions))
					}
				}
				require.Greater(t, len(sizes), 2)
				require.Equal(t, 1, sizes[len(sizes)-1])
			}
			obs.mu.Lock()
			defer obs.mu.Unlock()
			require.Positive(t, obs.classes[httpsink.Class5xx])
			require.Positive(t, obs.classes[httpsink.Class4xx])
			require.Positive(t, obs.retries)
		})
	}
}

type httpCounts struct {
	mu      sync.Mutex
	classes map[string]int
	retries int
}

func (h *httpCounts) Request(_, class string, _ time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.classes == nil {
		h.classes = map[string]int{}
	}
	h.classes[class]++
}

func (h *httpCounts) Retry(string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.retries++
}

func itoa(n int64) string { return store.Cursor{Position: n}.String()[2:] }

// The trap of a failover at the live tail: the leader posts a batch, the
// receiver acknowledges it, and the leader is deposed before its checkpoint
// moves; meanwhile more events arrived. The next leader must send exactly
// that batch again, under the same webhook-id, not a longer one.
func TestPGHTTPSinkRedeliversTheRecordedBatchAfterAFailover(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 5, 5, "A")
	var once sync.Once
	recv := sinktest.Start(t, func(r sinktest.Request) *sinktest.Answer {
		once.Do(func() {
			// While the first batch is in flight: more events, and another
			// leader's claim (the epoch moves), as when the leader is
			// killed between the 2xx and its checkpoint move.
			tb.appendEvents(t, 20, 20, "A")
			_, err := tb.pool.Exec(context.Background(), `UPDATE projectord.checkpoints SET epoch = epoch + 1 WHERE projector = 'hooks'`)
			if err != nil {
				t.Error(err)
			}
		})
		return nil
	})
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks", BatchSize: 100})
	p := ProjectorOf(cfg.Projectors[0], cfg, tb.log, nil)

	a := tb.httpBackend(t, cfg, "node-a")
	err := runner.Run(tb.ctx, p, a)
	require.ErrorIs(t, err, runner.ErrDeposed, "the first leader's checkpoint move is fenced")
	first := recv.Requests()
	require.Len(t, first, 1)
	require.Len(t, first[0].Positions, 5)

	b := tb.httpBackend(t, cfg, "node-b")
	ctx, cancel := context.WithCancel(tb.ctx)
	done := start(ctx, p, b)
	tb.waitCaughtUp(t, "hooks")
	cancel()
	require.NoError(t, <-done)
	reqs := recv.Requests()
	require.GreaterOrEqual(t, len(reqs), 3)
	require.Equal(t, first[0].ID, reqs[1].ID, "the same batch under the same webhook-id")
	require.Equal(t, first[0].Positions, reqs[1].Positions)
	require.Empty(t, recv.Check(tb.cursorOrder(t)))
	require.Len(t, recv.Acked(), 25)
}

// httpBackend is tb.backend for HTTP projectors, as the daemon wires them.
func (tb *pgBundle) httpBackend(t *testing.T, cfg *config.Config, node string) *runner.PGBackend {
	t.Helper()
	sql := *cfg
	sql.Projectors = []config.Projector{cfg.Projectors[0]}
	sql.Projectors[0].Sink = config.Sink{SQL: &config.SQLSink{Handlers: recordHandler("unused")}}
	b := tb.backend(t, &sql, node)
	d := New(Options{Config: cfg, Logger: tb.log})
	hs, err := d.httpSinks(tb.ctx, tb.pool)
	require.NoError(t, err)
	for name, h := range hs {
		b.AddHTTPProjector(name, h.target, h.sink)
	}
	return b
}

// Bad input: an unreachable URL, a TLS error, a malformed secret_file.
// Each is named with the projector, and nothing is lost: the checkpoint
// does not move.
func TestPGHTTPSinkBadInput(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	tb.appendEvents(t, 10, 10, "A")

	t.Run("malformed secret_file", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "secret")
		require.NoError(t, os.WriteFile(bad, []byte("hunter2-not-whsec"), 0o600))
		cfg := tb.httpConfig(t, "http://127.0.0.1:1/", config.Projector{Name: "badsecret"})
		cfg.Projectors[0].Sink.HTTP.SecretFile = bad
		d := New(Options{Config: cfg, Logger: tb.log})
		_, err := d.httpSinks(tb.ctx, tb.pool)
		require.ErrorIs(t, err, errFatal)
		require.ErrorContains(t, err, "projector badsecret")
		require.ErrorContains(t, err, bad)
		require.NotContains(t, err.Error(), "hunter2")
	})

	for name, url := range map[string]string{
		"unreachable": "http://user:hunter2@127.0.0.1:" + itoa(int64(testsupport.Port(t))) + "/events",
		"tls":         untrustedTLS(t),
	} {
		t.Run(name, func(t *testing.T) {
			cfg := tb.httpConfig(t, url, config.Projector{Name: "bad_" + name})
			d := tb.startDaemon(t, cfg, "node-"+name)
			testsupport.Until(t, "the error is recorded", 30*time.Second, func() bool {
				return tb.peek("bad_"+name).LastError != ""
			})
			cp := tb.checkpoint(t, "bad_"+name)
			require.Contains(t, cp.LastError, "projector bad_"+name)
			require.NotContains(t, cp.LastError, "hunter2")
			if name == "tls" {
				require.Contains(t, cp.LastError, "TLS error")
			} else {
				require.Contains(t, cp.LastError, "cannot connect")
			}
			require.True(t, cp.Cursor.IsZero(), "nothing delivered, nothing skipped")
			require.Zero(t, cp.EventsApplied)
			require.Equal(t, runner.StateLeader, d.States()["bad_"+name], "retried, not halted")
		})
	}
}

// untrustedTLS serves TLS with httptest's certificate, which nothing
// trusts, and returns its URL with a password in it.
func untrustedTLS(t *testing.T) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	srv.Listener.Close()
	l, err := net.Listen("tcp", "127.0.0.1:"+itoa(int64(testsupport.Port(t))))
	require.NoError(t, err)
	srv.Listener = l
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // every handshake fails: that is the test
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return strings.Replace(srv.URL, "https://", "https://user:hunter2@", 1) + "/events"
}

// A row that cannot be decoded (data that is not JSON, a NULL where an
// event needs a value) is never sent: it is a poison event, dead-lettered
// here, and every good event is delivered.
func TestPGHTTPSinkBadRowsArePoisonEvents(t *testing.T) {
	t.Parallel()
	tb := setupPG(t)
	src := seedBadRows(t, tb, true)
	recv := sinktest.Start(t, nil)
	cfg := tb.httpConfig(t, recv.URL, config.Projector{Name: "hooks",
		OnError: config.ErrorPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond, Then: "dead_letter"}})
	tb.startDaemon(t, cfg, "node-a")
	tb.waitCaughtUp(t, "hooks")
	require.Empty(t, recv.Check(tb.cursorOrder(t)))
	acked := recv.Acked()
	good := src.goodOf("A", "B")
	require.Len(t, acked, len(good))
	for _, p := range good {
		require.True(t, acked[p], "good event %d delivered", p)
	}
	letters := deadLetters(t, tb, "hooks")
	require.Len(t, letters, len(src.bad))
	for _, b := range src.bad {
		require.Contains(t, letters[b.cursor.Position].Error, "bad source row")
		require.False(t, acked[b.cursor.Position], "bad row %d never sent", b.cursor.Position)
	}
}
