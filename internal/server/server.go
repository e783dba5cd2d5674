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

// Server is the HTTP server. Start it, Stop it.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	log    *zap.Logger
	done   chan struct{}
	health Health
}

// New returns a server for listen on gatherer and health.
func New(listen string, gatherer prometheus.Gatherer, health Health, log *zap.Logger) *Server {
	s := &Server{log: log, done: make(chan struct{}), health: health}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{ErrorLog: zap.NewStdLog(log), Timeout: 10 * time.Second}))
	mux.HandleFunc("GET /livez", s.livez)
	mux.HandleFunc("GET /healthz", s.livez)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /status", s.status)
	s.srv = &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 15 * time.Second, IdleTimeout: time.Minute}
	return s
}

// Start listens and serves in the background. It returns once listening.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.srv.Addr)
	if err != nil {
		return fmt.Errorf("error listening on %s (http.listen): %w", s.srv.Addr, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server failed", zap.Error(err))
		}
	}()
	s.log.Info("serving /metrics /livez /readyz /status", zap.String("addr", ln.Addr().String()))
	return nil
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
