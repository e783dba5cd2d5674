package httpsink

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/projectord/projectord/internal/store"
)

// Request classes, the values of the class label of
// projectord_http_requests_total.
const (
	Class2xx     = "2xx"
	Class3xx     = "3xx"
	Class4xx     = "4xx"
	Class5xx     = "5xx"
	ClassError   = "error"
	ClassTimeout = "timeout"
)

// Classes lists every request class, for metrics initialised to zero.
var Classes = []string{Class2xx, Class3xx, Class4xx, Class5xx, ClassError, ClassTimeout}

// Observer learns of every request and retry. It must not block.
type Observer interface {
	Request(projector, class string, took time.Duration)
	Retry(projector string)
}

type nopObserver struct{}

func (nopObserver) Request(string, string, time.Duration) {}
func (nopObserver) Retry(string)                          {}

// Config is one HTTP sink.
type Config struct {
	Projector string
	URL       string
	// Key signs requests; nil sends no webhook-signature.
	Key []byte
	// Headers are sent with every request (from headers_file).
	Headers http.Header
	// Timeout bounds one request, answer included.
	Timeout time.Duration
	// Client, if set, sends the requests (tests); otherwise one of the
	// sink's own with Timeout.
	Client *http.Client
	// Stop ends retries when it is done (the replica's shutdown): a batch
	// that cannot be delivered now is left to the next leader.
	Stop     context.Context
	Observer Observer
	// Backoff paces retries: from Initial, doubling up to Max, jittered.
	Initial, Max time.Duration
	// Clock, if set, replaces time.Now for webhook-timestamp (tests).
	Clock func() time.Time
}

// Sink posts batches of one projector. It holds one batch in flight at a
// time (the loop never sends two), so its buffers are reused without locks.
type Sink struct {
	c      Config
	target string // the URL with any password masked, for errors and logs
	client *http.Client
	body   []byte
	sig    []byte

	mu sync.Mutex
	// notBefore is when the receiver's last Retry-After lets us send again.
	notBefore time.Time
	// bound is the batch recorded in flight and not yet checkpointed.
	bound *store.Delivery
	// gen is the projector's reset generation, read at every claim (a
	// reset fences the leader, so the next claim sees the new one).
	gen int64
}

// New returns a sink; c.URL must be a valid http or https URL.
func New(c Config) (*Sink, error) {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("projector %s: sink.http.url must be an http or https URL with a host", c.Projector)
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	if c.Stop == nil {
		c.Stop = context.Background()
	}
	if c.Initial <= 0 {
		c.Initial = 100 * time.Millisecond
	}
	if c.Max < c.Initial {
		c.Max = max(c.Initial, 10*time.Second)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	s := &Sink{c: c, target: u.Redacted(), client: c.Client}
	if s.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 4
		// A redirect would move a signed body somewhere else: answered 3xx,
		// it is the receiver's configuration to fix.
		s.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return s, nil
}

// Projector returns the projector the sink delivers for.
func (s *Sink) Projector() string { return s.c.Projector }

// outcome is what one batch's delivery came to.
type outcome struct {
	// status is the final HTTP status; 0 when delivery gave up without one.
	status int
	// failed is the position the receiver named, if any.
	failed int64
	named  bool
}

// attemptError is a failed attempt that is nobody's event's fault: the same
// request is tried again (after retryAfter when the receiver asked for it).
type attemptError struct {
	class      string
	err        error
	retryAfter time.Duration
}

func (e *attemptError) Error() string { return e.err.Error() }

// deliver posts body under id until the receiver answers anything but a
// retryable failure, ctx ends (leadership lost or the commit's time up), the
// replica stops, or retrying has taken about two request timeouts: then the
// last failure goes back to the loop, which records it in last_error (an
// operator sees "retrying: ...") and, after its own backoff, sends the same
// range under the same id again (Bound). Before every attempt after the
// first, recheck says whether this replica still leads (a fenced write), so
// a deposed leader stops posting even before its lease notices.
func (s *Sink) deliver(ctx context.Context, id string, body []byte, recheck func(context.Context) error) (outcome, error) {
	delay := s.c.Initial
	budget := time.Now().Add(2 * s.c.Timeout)
	for attempt := 1; ; attempt++ {
		if err := s.waitRetryAfter(ctx); err != nil {
			return outcome{}, err
		}
		if attempt > 1 {
			if err := recheck(ctx); err != nil {
				return outcome{}, err
			}
		}
		status, resp, aerr := s.attempt(ctx, id, body)
		if aerr == nil {
			o := outcome{status: status}
			if status >= 400 && status < 500 {
				o.failed, o.named = failedPosition(resp)
			}
			return o, nil
		}
		if err := s.stopped(ctx); err != nil {
			return outcome{}, fmt.Errorf("%w (last attempt: %v)", err, aerr)
		}
		s.c.Observer.Retry(s.c.Projector)
		wait := delay/2 + time.Duration(rand.Int64N(int64(delay)))
		delay = min(2*delay, s.c.Max)
		if aerr.retryAfter > 0 {
			s.mu.Lock()
			s.notBefore = time.Now().Add(aerr.retryAfter)
			s.mu.Unlock()
			wait = 0
		}
		if time.Now().Add(wait).After(budget) {
			return outcome{}, aerr
		}
		if d, ok := ctx.Deadline(); ok && time.Until(d) < wait+s.c.Timeout/4 {
			// Not worth starting an attempt that cannot finish: the loop
			// retries the batch after its own backoff.
			return outcome{}, aerr
		}
		if !sleep(ctx, s.c.Stop, wait) {
			if err := s.stopped(ctx); err != nil {
				return outcome{}, fmt.Errorf("%w (last attempt: %v)", err, aerr)
			}
		}
	}
}

// stopped says why retrying must end now, if it must.
func (s *Sink) stopped(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("delivery to %s of projector %s given up: %v", s.target, s.c.Projector, context.Cause(ctx))
	}
	if s.c.Stop.Err() != nil {
		return fmt.Errorf("delivery to %s of projector %s given up: the replica is stopping", s.target, s.c.Projector)
	}
	return nil
}

func (s *Sink) waitRetryAfter(ctx context.Context) error {
	s.mu.Lock()
	nb := s.notBefore
	s.mu.Unlock()
	d := time.Until(nb)
	if d <= 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d+s.c.Timeout/4 {
		return fmt.Errorf("projector %s: the receiver %s asked to wait %s (Retry-After)", s.c.Projector, s.target, d.Round(time.Millisecond))
	}
	if !sleep(ctx, s.c.Stop, d) {
		return s.stopped(ctx)
	}
	return nil
}

// attempt posts once. A nil error means the receiver answered with a final
// status (2xx, or a 4xx that is not retryable); the body is returned for a
// 4xx only, bounded.
func (s *Sink) attempt(ctx context.Context, id string, body []byte) (int, []byte, *attemptError) {
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, s.c.Timeout)
	defer cancel()
	rb := newBodyReader(body)
	req, err := http.NewRequestWithContext(actx, http.MethodPost, s.c.URL, rb)
	if err != nil {
		return 0, nil, &attemptError{class: ClassError, err: fmt.Errorf("projector %s: cannot make a request to %s", s.c.Projector, s.target)}
	}
	// The body is the sink's reused buffer, which the next batch overwrites:
	// the Transport may still be writing it after Do returned (a receiver
	// answering before reading it all), and only its Close says it is done
	// (the RoundTripper contract). Cancelling the request first makes a
	// write blocked on a receiver that stopped reading end now.
	defer func() {
		cancel()
		<-rb.closed
	}()
	req.ContentLength = int64(len(body))
	for k, v := range s.c.Headers {
		req.Header[k] = v
	}
	ts := s.c.Clock().Unix()
	req.Header["Content-Type"] = []string{ContentType}
	req.Header["Webhook-Id"] = []string{id}
	req.Header["Webhook-Timestamp"] = []string{strconv.FormatInt(ts, 10)}
	if s.c.Key != nil {
		s.sig = AppendSignature(s.sig[:0], s.c.Key, id, ts, body)
		req.Header["Webhook-Signature"] = []string{string(s.sig)}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		class := ClassError
		if actx.Err() != nil && ctx.Err() == nil {
			class = ClassTimeout
		}
		s.c.Observer.Request(s.c.Projector, class, time.Since(start))
		return 0, nil, &attemptError{class: class, err: s.describe(class, err)}
	}
	var rbody []byte
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		rbody, err = io.ReadAll(io.LimitReader(resp.Body, 4096))
	} else {
		// Read (bounded) so the connection can be reused.
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	}
	resp.Body.Close()
	class := statusClass(resp.StatusCode)
	if err != nil && resp.StatusCode/100 == 2 {
		// The answer was cut: a 2xx whose body did not arrive whole is
		// still a 2xx (the status line is the acknowledgement).
		err = nil
	}
	s.c.Observer.Request(s.c.Projector, class, time.Since(start))
	switch {
	case resp.StatusCode/100 == 2:
		return resp.StatusCode, nil, nil
	case receiverWide(resp.StatusCode):
		return resp.StatusCode, nil, &attemptError{class: class,
			err: fmt.Errorf("projector %s: the receiver %s answered %s, a refusal of every request alike (credentials in headers_file, the URL, the method), not of an event: retried until it accepts",
				s.c.Projector, s.target, resp.Status),
			retryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case retryable(resp.StatusCode):
		return resp.StatusCode, nil, &attemptError{class: class,
			err:        fmt.Errorf("projector %s: the receiver %s answered %s", s.c.Projector, s.target, resp.Status),
			retryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	case resp.StatusCode/100 == 4:
		return resp.StatusCode, rbody, nil
	default:
		// 1xx and 3xx: a receiver that redirects or says nothing final
		// is misconfigured for everyone alike, never an event's fault.
		return resp.StatusCode, nil, &attemptError{class: class,
			err: fmt.Errorf("projector %s: the receiver %s answered %s, which is neither a success nor a failure of the batch", s.c.Projector, s.target, resp.Status)}
	}
}

// bodyReader is a request body whose Close tells the sink the Transport
// is done with the bytes.
type bodyReader struct {
	r      bytes.Reader
	once   sync.Once
	closed chan struct{}
}

func newBodyReader(b []byte) *bodyReader {
	rb := &bodyReader{closed: make(chan struct{})}
	rb.r.Reset(b)
	return rb
}

func (b *bodyReader) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *bodyReader) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// describe names a transport failure without what could hold a secret
// (the URL's password: url.Error repeats the URL as given).
func (s *Sink) describe(class string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var what string
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var opErr *net.OpError
	switch {
	case class == ClassTimeout:
		what = fmt.Sprintf("no answer within %s (sink.http.timeout)", s.c.Timeout)
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		what = "TLS error: " + err.Error()
	case errors.As(err, &opErr) && opErr.Op == "dial":
		what = "cannot connect: " + opErr.Err.Error()
	default:
		what = err.Error()
	}
	return fmt.Errorf("projector %s: posting to %s failed: %s", s.c.Projector, s.target, what)
}

func statusClass(code int) string {
	switch code / 100 {
	case 2:
		return Class2xx
	case 3:
		return Class3xx
	case 4:
		return Class4xx
	case 5:
		return Class5xx
	}
	return ClassError
}

// retryable reports whether a status is the receiver's passing trouble,
// never the batch's: request timeout, too early, too many requests, and any
// server error.
func retryable(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooEarly || code == http.StatusTooManyRequests || code >= 500
}

// receiverWide reports whether a 4xx says the receiver refuses any request
// of ours whatever its events: unauthenticated, forbidden, no such endpoint,
// method not allowed, proxy authentication. Charging that to events would
// halve batches down to each event and apply on_error to it (with skip, an
// expired token would pass the whole stream undelivered), so it is retried
// like a 5xx (README, "HTTP sink"). Any other 4xx is the batch's.
func receiverWide(code int) bool {
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound,
		http.StatusMethodNotAllowed, http.StatusProxyAuthRequired:
		return true
	}
	return false
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP-date.
// It returns 0 when there is none, or it is unparseable or past; it caps
// the wait at an hour so a wrong header cannot park a projector for days.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		d = time.Duration(min(n, 3600)) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	if d <= 0 {
		return 0
	}
	return min(d, time.Hour)
}

// failedPosition reads {"failed_position": N} from a 4xx body.
func failedPosition(body []byte) (int64, bool) {
	var v struct {
		FailedPosition *json.Number `json:"failed_position"`
	}
	if len(body) == 0 || json.Unmarshal(body, &v) != nil || v.FailedPosition == nil {
		return 0, false
	}
	n, err := v.FailedPosition.Int64()
	return n, err == nil
}

// sleep waits d, or until ctx or stop ends; false when either ended.
func sleep(ctx, stop context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop.Done():
		return false
	}
}
