// Package server serves projectord's HTTP endpoints: /metrics, /livez
// (alias /healthz), /readyz and /status. Handlers read only in-memory state,
// so probes and scrapes never load the database.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/runner"
)

// Health is what the probes and /status read.
type Health interface {
	Live() (bool, []runner.Check)
	Readiness() (bool, []runner.Check)
	Snapshot() runner.Snapshot
}

// Limits of the server. Its clients are a few scrapers and probes, so a
// small cap holds: each connection costs a file descriptor and memory, and
// the database connections need descriptors too. An idle keep-alive
// connection is closed after idleTimeout, and at once when the cap is
// reached (see limitListener).
const (
	maxConns       = 64
	idleTimeout    = 30 * time.Second
	maxHeaderBytes = 16 << 10
)

// Server is the HTTP server. Start it, Stop it.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	log    *zap.Logger
	done   chan struct{}
	health Health
	// maxConns caps concurrent connections (tests lower it).
	maxConns int
	limited  *limitListener // set by Start
}

// New returns a server for listen on gatherer and health.
func New(listen string, gatherer prometheus.Gatherer, health Health, log *zap.Logger) *Server {
	s := &Server{log: log, done: make(chan struct{}), health: health, maxConns: maxConns}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(log), Timeout: 10 * time.Second}))
	mux.HandleFunc("GET /livez", s.livez)
	mux.HandleFunc("GET /healthz", s.livez)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /status", s.status)
	// The server's own errors (a handler's panic, failed accepts) go to the
	// log like everything else, not to stderr as plain text.
	errLog, _ := zap.NewStdLogAt(log, zap.WarnLevel)
	s.srv = &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 15 * time.Second, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes, ErrorLog: errLog,
		ConnState: s.connState}
	return s
}

// Start listens and serves in the background. It returns once listening.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.srv.Addr)
	if err != nil {
		return fmt.Errorf("error listening on %s (http.listen): %w", s.srv.Addr, err)
	}
	s.ln = ln
	s.limited = newLimitListener(ln, s.maxConns, s.shedIdle)
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.limited); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server failed", zap.Error(err))
		}
	}()
	s.log.Info("serving /metrics /livez /readyz /status", zap.String("addr", ln.Addr().String()))
	return nil
}

// shedIdle closes idle keep-alive connections, so that probes and scrapes
// waiting at the connection cap are not locked out by connections doing
// nothing until their idle timeout.
func (s *Server) shedIdle() {
	s.srv.SetKeepAlivesEnabled(false)
	s.srv.SetKeepAlivesEnabled(true)
}

// connState sheds a connection as it turns idle while a newcomer waits.
func (s *Server) connState(_ net.Conn, st http.ConnState) {
	if st == http.StateIdle && s.limited.Waiting() {
		s.shedIdle()
	}
}

// Addr is the listening address (useful with port 0).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop shuts the server down within ctx.
func (s *Server) Stop(ctx context.Context) {
	if s.ln == nil {
		return
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

func (s *Server) livez(w http.ResponseWriter, r *http.Request) {
	ok, checks := s.health.Live()
	writeProbe(w, r, ok, checks)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ok, checks := s.health.Readiness()
	writeProbe(w, r, ok, checks)
}

// writeProbe answers 200 "ok" or 503 naming the failed checks; with
// ?verbose it lists every check, as Kubernetes components do.
func writeProbe(w http.ResponseWriter, r *http.Request, ok bool, checks []runner.Check) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, verbose := r.URL.Query()["verbose"]
	for _, c := range checks {
		if !verbose && c.OK {
			continue
		}
		mark := "+"
		if !c.OK {
			mark = "-"
		}
		line := fmt.Sprintf("[%s]%s ok", mark, c.Name)
		if !c.OK {
			line = fmt.Sprintf("[%s]%s failed: %s", mark, c.Name, c.Detail)
		}
		fmt.Fprintln(w, line)
	}
	if ok {
		fmt.Fprintln(w, "ok")
	} else {
		fmt.Fprintln(w, "not ok")
	}
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// Unauthenticated: error texts carry event data, so only their summaries.
	_ = enc.Encode(s.health.Snapshot().Public())
}
