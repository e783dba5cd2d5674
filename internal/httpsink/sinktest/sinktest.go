// Package sinktest is for tests only: a receiver of the HTTP sink that
// records every request (webhook-id, positions, answer), verifies every
// signature with the example receiver, and can be told how to answer each
// request, so tests can fault it.
package sinktest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/projectord/projectord/examples/webhookreceiver"
	"github.com/projectord/projectord/internal/testsupport"
)

// Secret is the signing secret tests use.
const Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// Request is one request as the receiver saw it.
type Request struct {
	N         int // 1 for the first request
	ID        string
	Positions []int64
	// Status is the answer; 0 when the connection was dropped or stalled.
	Status int
	// BadSignature is set when the signature did not verify.
	BadSignature bool
}

// Acked reports whether the request was acknowledged (2xx).
func (r Request) Acked() bool { return r.Status/100 == 2 }

// Answer is what a Fault tells the receiver to do with a request.
type Answer struct {
	Status int
	Body   string
	// Header is added to the answer.
	Header http.Header
	// Stall waits until the client gives up; Drop hijacks the connection
	// and closes it mid-response. Neither acknowledges the request.
	Stall, Drop bool
	// After, if set, runs once the answer is written and flushed (to kill
	// the sender between its 2xx and its checkpoint move).
	After func()
}

// Fault decides the answer to request r; nil answers 204.
type Fault func(r Request) *Answer

// Receiver records requests.
type Receiver struct {
	URL string
	// Fault, if set, decides each answer (set before the first request).
	Fault Fault

	verify webhookreceiver.Receiver
	mu     sync.Mutex
	reqs   []Request
}

// Start serves a receiver on loopback, at a port from testsupport.Port.
func Start(t testing.TB, fault Fault) *Receiver {
	t.Helper()
	r := &Receiver{Fault: fault, verify: webhookreceiver.Receiver{Secret: Secret}}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", testsupport.Port(t)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.URL = "http://" + l.Addr().String() + "/events"
	return r
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(400)
		return
	}
	id, verr := r.verify.Verify(req.Header, body)
	if id == "" {
		id = req.Header.Get("webhook-id")
	}
	var events []webhookreceiver.Event
	_ = json.Unmarshal(body, &events)
	rec := Request{ID: id, BadSignature: verr != nil}
	for _, e := range events {
		rec.Positions = append(rec.Positions, e.Position)
	}
	r.mu.Lock()
	rec.N = len(r.reqs) + 1
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	a := &Answer{Status: http.StatusNoContent}
	if verr != nil {
		a = &Answer{Status: http.StatusUnauthorized}
	} else if r.Fault != nil {
		if f := r.Fault(rec); f != nil {
			a = f
		}
	}
	switch {
	case a.Stall:
		<-req.Context().Done()
		return
	case a.Drop:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Len"))
				_ = c.Close()
			}
		}
		return
	}
	for k, v := range a.Header {
		w.Header()[k] = v
	}
	r.mu.Lock()
	r.reqs[rec.N-1].Status = a.Status
	r.mu.Unlock()
	w.WriteHeader(a.Status)
	_, _ = io.WriteString(w, a.Body)
	if a.After != nil {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		a.After()
	}
}

// Requests returns every request so far.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// Acked returns the positions acknowledged (in 2xx requests), each once.
func (r *Receiver) Acked() map[int64]bool {
	out := map[int64]bool{}
	for _, q := range r.Requests() {
		if q.Acked() {
			for _, p := range q.Positions {
				out[p] = true
			}
		}
	}
	return out
}

// Check returns the first breach, "" if none, of what every delivery
// must hold: a valid signature; positions in cursor order (order gives
// the expected order of positions); and an event acknowledged in two
// requests only under the same webhook-id.
func (r *Receiver) Check(order map[int64]int) string {
	ackedIn := map[int64]string{}
	for _, q := range r.Requests() {
		if q.BadSignature {
			return fmt.Sprintf("request %d had a bad signature", q.N)
		}
		for i := 1; i < len(q.Positions); i++ {
			if order[q.Positions[i-1]] >= order[q.Positions[i]] {
				return fmt.Sprintf("request %d: position %d before %d, out of cursor order", q.N, q.Positions[i-1], q.Positions[i])
			}
		}
		if !q.Acked() {
			continue
		}
		for _, p := range q.Positions {
			if id, ok := ackedIn[p]; ok && id != q.ID {
				return fmt.Sprintf("event %d acknowledged under webhook-id %s and again under %s (request %d)", p, id, q.ID, q.N)
			}
			ackedIn[p] = q.ID
		}
	}
	return ""
}
