package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/projectord/projectord/internal/runner"
)

type fakeHealth struct {
	live, ready bool
}

func (f *fakeHealth) Live() (bool, []runner.Check) {
	return f.live, []runner.Check{{Name: "process", OK: true}, {Name: "source_watcher", OK: f.live, Detail: "stuck"}}
}

func (f *fakeHealth) Readiness() (bool, []runner.Check) {
	return f.ready, []runner.Check{{Name: "config", OK: true}, {Name: "database", OK: f.ready, Detail: "connection refused"}}
}

func (f *fakeHealth) Snapshot() runner.Snapshot {
	return runner.Snapshot{Node: "n1", Head: 42, Projectors: []runner.ProjectorStatus{{Name: "p", State: runner.StateLeader, Position: 40, LagEvents: 2}}}
}

func start(t *testing.T, h Health) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "projectord_test_gauge", Help: "x"})
	reg.MustRegister(g)
	s := New("127.0.0.1:0", reg, h, zaptest.NewLogger(t))
	require.NoError(t, s.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Stop(ctx)
	})
	return "http://" + s.Addr()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func TestProbesReflectHealth(t *testing.T) {
	t.Parallel()
	h := &fakeHealth{live: true, ready: false}
	base := start(t, h)

	code, body := get(t, base+"/readyz")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "[-]database failed: connection refused")
	require.NotContains(t, body, "[+]config ok", "only failures without ?verbose")
	_, body = get(t, base+"/readyz?verbose")
	require.Contains(t, body, "[+]config ok")

	for _, path := range []string{"/livez", "/healthz"} {
		code, body = get(t, base+path)
		require.Equal(t, http.StatusOK, code, path)
		require.Contains(t, body, "ok")
	}
	h.live = false
	code, body = get(t, base+"/livez")
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Contains(t, body, "[-]source_watcher failed: stuck")
}

func TestStatusAndMetrics(t *testing.T) {
	t.Parallel()
	base := start(t, &fakeHealth{live: true, ready: true})
	code, body := get(t, base+"/status")
	require.Equal(t, http.StatusOK, code)
	var snap runner.Snapshot
	require.NoError(t, json.Unmarshal([]byte(body), &snap))
	require.Equal(t, "n1", snap.Node)
	require.Equal(t, int64(2), snap.Projectors[0].LagEvents)

	code, body = get(t, base+"/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "projectord_test_gauge 0")

	resp, err := http.Post(base+"/status", "text/plain", nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}
