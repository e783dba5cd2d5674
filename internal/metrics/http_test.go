package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// Every class of every HTTP projector exists at 0 from the start; requests
// count by class and feed the duration histogram; retries count apart.
func TestHTTPSinkSeries(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	h := NewHTTP(reg, []string{"hooks"})
	require.Equal(t, 6, countSeries(t, reg, "projectord_http_requests_total"))
	require.Equal(t, 1, countSeries(t, reg, "projectord_http_retries_total"))
	require.Equal(t, 1, countSeries(t, reg, "projectord_http_request_duration_seconds"))
	h.Request("hooks", "5xx", 20*time.Millisecond)
	h.Request("hooks", "2xx", 5*time.Millisecond)
	h.Retry("hooks")
	require.Equal(t, 1.0, testutil.ToFloat64(h.requests.WithLabelValues("hooks", "5xx")))
	require.Equal(t, 1.0, testutil.ToFloat64(h.requests.WithLabelValues("hooks", "2xx")))
	require.Zero(t, testutil.ToFloat64(h.requests.WithLabelValues("hooks", "timeout")))
	require.Equal(t, 1.0, testutil.ToFloat64(h.retries.WithLabelValues("hooks")))
	require.Equal(t, 1, testutil.CollectAndCount(h.duration), "one histogram series per projector")
	families, err := reg.Gather()
	require.NoError(t, err)
	var samples uint64
	for _, f := range families {
		if f.GetName() == "projectord_http_request_duration_seconds" {
			samples = f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	require.EqualValues(t, 2, samples)
}
