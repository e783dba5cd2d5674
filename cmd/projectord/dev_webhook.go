package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/projectord/projectord/examples/webhookreceiver"
	"github.com/projectord/projectord/internal/config"
	"github.com/projectord/projectord/internal/freeport"
)

// devWebhookProjector is the projector `projectord dev --http-sink` adds.
const devWebhookProjector = "webhook_demo"

// devWebhook is the example receiver dev runs on loopback.
type devWebhook struct {
	url string
	srv *http.Server
	dir string
}

// startDevWebhook serves the example receiver on a loopback port, writes a
// throw-away signing secret to a private file, and adds the projector
// that delivers every event to the receiver to cfg. Each delivery the
// receiver accepts is printed on out, as one line.
func startDevWebhook(cfg *config.Config, out io.Writer) (*devWebhook, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	secret := "whsec_" + base64.StdEncoding.EncodeToString(key)
	dir, err := os.MkdirTemp("", "projectord-dev-webhook-")
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	port, err := freeport.Pick()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("error starting the example webhook receiver: %w", err)
	}
	var applied atomic.Int64
	var last atomic.Int64
	recv := &webhookreceiver.Receiver{Secret: secret, Apply: func(e webhookreceiver.Event) error {
		applied.Add(1)
		last.Store(e.Position)
		return nil
	}}
	var mu sync.Mutex
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// One batch in flight per projector: requests come one at a time,
		// so the counts before and after belong to this one.
		mu.Lock()
		defer mu.Unlock()
		before := applied.Load()
		sw := &statusWriter{ResponseWriter: w}
		recv.ServeHTTP(sw, r)
		fmt.Fprintf(out, "webhook     %d %s: %d new events, up to position %d (webhook-id %s)\n",
			sw.status, http.StatusText(sw.status), applied.Load()-before, last.Load(), printable(r.Header.Get("webhook-id")))
	})
	wh := &devWebhook{url: "http://" + l.Addr().String() + "/events", srv: &http.Server{Handler: handler}, dir: dir}
	go func() { _ = wh.srv.Serve(l) }()
	cfg.Projectors = append(cfg.Projectors, config.Projector{
		Name: devWebhookProjector, BatchSize: cfg.Defaults.BatchSize, OnError: cfg.Defaults.OnError, Weight: config.DefaultWeight,
		Sink: config.Sink{HTTP: &config.HTTPSink{URL: wh.url, SecretFile: file}},
	})
	return wh, nil
}

func (w *devWebhook) close() {
	_ = w.srv.Close()
	_ = os.RemoveAll(w.dir)
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
