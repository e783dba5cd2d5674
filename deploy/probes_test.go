package deploy_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/server"
)

// fakeHealth is a live replica that is not ready (its database is down).
type fakeHealth struct{}

func (fakeHealth) Live() (bool, []runner.Check) {
	return true, []runner.Check{{Name: "process", OK: true}}
}
func (fakeHealth) Readiness() (bool, []runner.Check) {
	return false, []runner.Check{{Name: "database", OK: false, Detail: "connecting"}}
}
func (fakeHealth) Snapshot() runner.Snapshot { return runner.Snapshot{} }

// requireServedPaths starts the daemon's HTTP server and requires every
// path to be served: 200, or 503 for an unready probe, never 404.
func requireServedPaths(t *testing.T, paths ...string) {
	t.Helper()
	srv := server.New("127.0.0.1:0", prometheus.NewRegistry(), fakeHealth{}, zap.NewNop())
	require.NoError(t, srv.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Stop(ctx)
	})
	get := func(path string) int {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+srv.Addr()+path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	require.Equal(t, http.StatusNotFound, get("/no-such-probe"), "the check can tell a missing path")
	for _, p := range paths {
		require.Contains(t, []int{http.StatusOK, http.StatusServiceUnavailable}, get(p), "GET %s", p)
	}
	// The fake is live and not ready: each probe reads its own check.
	require.Equal(t, http.StatusOK, get("/livez"))
	require.Equal(t, http.StatusServiceUnavailable, get("/readyz"))
}
