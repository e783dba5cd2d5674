package httpsink

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/store"
	"github.com/projectord/projectord/internal/testsupport"
)

type countingObserver struct {
	mu      sync.Mutex
	classes []string
	retries int
}

func (o *countingObserver) Request(_, class string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.classes = append(o.classes, class)
}

func (o *countingObserver) Retry(string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.retries++
}

func (o *countingObserver) snapshot() ([]string, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.classes...), o.retries
}

func newSink(t *testing.T, url string, obs Observer) *Sink {
	t.Helper()
	key, err := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	require.NoError(t, err)
	s, err := New(Config{Projector: "p", URL: url, Key: key, Timeout: time.Second, Observer: obs,
		Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond})
	require.NoError(t, err)
	return s
}

func noRecheck(context.Context) error { return nil }

// Retryable answers (5xx, 408, 425, 429), a stall past the timeout and a
// connection dropped mid-response are retried with the same webhook-id and
// body; a new timestamp and signature per attempt, each valid.
func TestDeliverRetriesRetryableFailuresWithTheSameID(t *testing.T) {
	var mu sync.Mutex
	var ids []string
	var bodies []string
	var n atomic.Int32
	key, _ := ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ts := r.Header.Get("webhook-timestamp")
		var sec int64
		fmt.Sscan(ts, &sec)
		if Sign(key, r.Header.Get("webhook-id"), sec, b) != r.Header.Get("webhook-signature") {
			t.Errorf("bad signature")
		}
		require.Equal(t, ContentType, r.Header.Get("Content-Type"))
		mu.Lock()
		ids, bodies = append(ids, r.Header.Get("webhook-id")), append(bodies, string(b))
		mu.Unlock()
		switch n.Add(1) {
		case 1:
			w.WriteHeader(500)
		case 2:
			w.WriteHeader(408)
		case 3:
			w.WriteHeader(425)
		case 4:
			w.WriteHeader(429)
		case 5:
			<-r.Context().Done() // stalls past the sink's timeout
		case 6:
			hj := w.(http.Hijacker)
			c, _, _ := hj.Hijack()
			c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Len")) // dropped mid-response
			c.Close()
		default:
			w.WriteHeader(204)
		}
	}))
	obs := &countingObserver{}
	s := newSink(t, url, obs)
	// As the loop does: a failure deliver gives back is sent again.
	var o outcome
	var err error
	for range 10 {
		if o, err = s.deliver(context.Background(), "msg_x", []byte(`[1]`), noRecheck); err == nil {
			break
		}
	}
	require.NoError(t, err)
	require.Equal(t, 204, o.status)
	require.Equal(t, []string{"msg_x", "msg_x", "msg_x", "msg_x", "msg_x", "msg_x", "msg_x"}, ids)
	for _, b := range bodies {
		require.Equal(t, `[1]`, b)
	}
	classes, retries := obs.snapshot()
	require.Equal(t, []string{Class5xx, Class4xx, Class4xx, Class4xx, ClassTimeout, ClassError, Class2xx}, classes)
	require.Equal(t, 6, retries)
}

// Other 4xx are final: not retried, and the body may name the event.
func TestDeliverReturnsAFinal4xxWithTheNamedPosition(t *testing.T) {
	var n atomic.Int32
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(422)
		w.Write([]byte(`{"failed_position": 42}`))
	}))
	o, err := newSink(t, url, nil).deliver(context.Background(), "msg_x", []byte(`[]`), noRecheck)
	require.NoError(t, err)
	require.Equal(t, 422, o.status)
	require.True(t, o.named)
	require.Equal(t, int64(42), o.failed)
	require.Equal(t, int32(1), n.Load())

	url = serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(400) }))
	o, err = newSink(t, url, nil).deliver(context.Background(), "msg_x", []byte(`[]`), noRecheck)
	require.NoError(t, err)
	require.Equal(t, 400, o.status)
	require.False(t, o.named)
}

// Retry-After (seconds) holds the next attempt back at least that long.
func TestDeliverHonoursRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		first := len(at) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			return
		}
		w.WriteHeader(200)
	}))
	o, err := newSink(t, url, nil).deliver(context.Background(), "msg_x", []byte(`[]`), noRecheck)
	require.NoError(t, err)
	require.Equal(t, 200, o.status)
	require.Len(t, at, 2)
	require.GreaterOrEqual(t, at[1].Sub(at[0]), time.Second-10*time.Millisecond)
}

func TestRetryAfterParsesSecondsAndHTTPDates(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	require.Equal(t, 3*time.Second, retryAfter("3", now))
	require.Equal(t, 90*time.Second, retryAfter(now.Add(90*time.Second).Format(http.TimeFormat), now))
	require.Equal(t, time.Duration(0), retryAfter(now.Add(-time.Minute).Format(http.TimeFormat), now), "past")
	require.Equal(t, time.Duration(0), retryAfter("soon", now))
	require.Equal(t, time.Duration(0), retryAfter("", now))
	require.Equal(t, time.Duration(0), retryAfter("-5", now))
	require.Equal(t, time.Hour, retryAfter("999999", now), "capped")
}

// A receiver-wide 4xx (401, 403, 404, 405, 407) is no event's fault: it is
// retried like a 5xx, under the same id, and its error names the status;
// any other 4xx is the batch's, final at once.
func TestDeliverRetriesAReceiverWide4xx(t *testing.T) {
	for _, code := range []int{401, 403, 404, 405, 407} {
		var n atomic.Int32
		url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) < 3 {
				w.WriteHeader(code)
				return
			}
			w.WriteHeader(204)
		}))
		obs := &countingObserver{}
		o, err := newSink(t, url, obs).deliver(context.Background(), "msg_x", []byte(`[]`), noRecheck)
		require.NoError(t, err, "%d", code)
		require.Equal(t, 204, o.status, "%d", code)
		require.Equal(t, int32(3), n.Load(), "%d: retried until accepted", code)
		classes, retries := obs.snapshot()
		require.Equal(t, []string{Class4xx, Class4xx, Class2xx}, classes)
		require.Equal(t, 2, retries)
	}
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(401) }))
	s, err := New(Config{Projector: "p", URL: url, Timeout: 50 * time.Millisecond, Initial: time.Millisecond, Max: 2 * time.Millisecond})
	require.NoError(t, err)
	_, err = s.deliver(context.Background(), "msg_x", []byte(`[]`), noRecheck)
	require.ErrorContains(t, err, "answered 401 Unauthorized, a refusal of every request alike")
	for _, c := range []int{400, 409, 410, 413, 422} {
		require.False(t, receiverWide(c), "%d", c)
	}
}

func TestRetryableStatuses(t *testing.T) {
	for _, c := range []int{408, 425, 429, 500, 502, 503, 504} {
		require.True(t, retryable(c), "%d", c)
	}
	for _, c := range []int{400, 401, 403, 404, 409, 413, 422} {
		require.False(t, retryable(c), "%d", c)
	}
}

// Retrying stops at once when the context ends (leadership lost) or the
// replica stops, and when the recheck says this replica no longer leads.
func TestDeliverStopsOnLossOfLeadershipAndOnStop(t *testing.T) {
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	s := newSink(t, url, nil)
	deposed := fmt.Errorf("fenced")
	_, err := s.deliver(context.Background(), "msg_x", nil, func(context.Context) error { return deposed })
	require.ErrorIs(t, err, deposed)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := s.deliver(ctx, "msg_x", nil, noRecheck); done <- err }()
	cancel()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "given up")
	case <-time.After(30 * time.Second):
		t.Fatal("retries went on after the context ended")
	}

	stop, stopNow := context.WithCancel(context.Background())
	s.c.Stop = stop
	go func() { _, err := s.deliver(context.Background(), "msg_x", nil, noRecheck); done <- err }()
	stopNow()
	select {
	case err := <-done:
		require.ErrorContains(t, err, "the replica is stopping")
	case <-time.After(30 * time.Second):
		t.Fatal("retries went on after the replica stopped")
	}
}

// An unreachable URL and a TLS error come back as errors naming the
// projector, with the URL's password masked; retried until the deadline.
func TestDeliverErrorsNameTheProjectorAndHideThePassword(t *testing.T) {
	port := testsupport.Port(t) // nobody listens there
	s := newSink(t, fmt.Sprintf("http://user:hunter2@127.0.0.1:%d/events", port), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := s.deliver(ctx, "msg_x", nil, noRecheck)
	require.Error(t, err)
	require.ErrorContains(t, err, "projector p")
	require.ErrorContains(t, err, "cannot connect")
	require.NotContains(t, err.Error(), "hunter2")

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) }))
	srv.Listener.Close()
	l, lerr := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testsupport.Port(t)))
	require.NoError(t, lerr)
	srv.Listener = l
	srv.StartTLS() // a certificate nobody trusts
	defer srv.Close()
	s = newSink(t, strings.Replace(srv.URL, "https://", "https://user:hunter2@", 1), nil)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	_, err = s.deliver(ctx2, "msg_x", nil, noRecheck)
	require.ErrorContains(t, err, "projector p")
	require.ErrorContains(t, err, "TLS error")
	require.NotContains(t, err.Error(), "hunter2")
}

func TestNewRefusesABadURL(t *testing.T) {
	for _, u := range []string{"ftp://x/y", "http://", "nope", "http://user:hunter2@[::1"} {
		_, err := New(Config{Projector: "p", URL: u})
		require.ErrorContains(t, err, "projector p: sink.http.url", "%q", u)
		require.NotContains(t, err.Error(), "hunter2")
	}
}

// Commit encodes every batch into the one buffer s.body. net/http's Transport may still be writing a
// request's body after Do has returned its response (the RoundTripper
// contract: "callers wanting to reuse the body for subsequent requests must
// arrange to wait for the Close call"), which happens whenever a receiver
// answers before reading the whole body (a 413, a 401, a 422 decided from
// the headers). The next batch is then encoded into the buffer that the
// transport is still reading: a data race, and the tail of the earlier
// request on the wire is the next batch's bytes. deliver returns only once
// the transport closed the body (it cancels the request first). Run with
// -race: without the wait, the race detector flags the buffer.
func TestDeliverReturnsOnlyOnceTheTransportLetGoOfTheBody(t *testing.T) {
	url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge) // answered without reading the body
	}))
	s := newSink(t, url, nil)
	big := []store.Event{{Cursor: store.Cursor{XID: 1, Position: 1}, Type: "T", StreamID: "s",
		Data: []byte(`"` + strings.Repeat("x", 8<<20) + `"`)}}
	for i := 0; i < 5; i++ {
		// What Commit does for each batch (and the loop's halves): encode
		// into s.body, then deliver it.
		s.body = AppendBatch(s.body[:0], "p", 0, big)
		o, err := s.deliver(context.Background(), "msg_x", s.body, noRecheck)
		require.NoError(t, err)
		require.Equal(t, http.StatusRequestEntityTooLarge, o.status)
	}
}
