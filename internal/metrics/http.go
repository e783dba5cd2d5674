package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/projectord/projectord/internal/httpsink"
)

// HTTP records the HTTP sinks' requests and retries; it implements
// httpsink.Observer.
type HTTP struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	retries  *prometheus.CounterVec
}

// NewHTTP registers the projectord_http_* series on reg, at zero for every
// HTTP projector and class, so a rate() has a start.
func NewHTTP(reg prometheus.Registerer, projectors []string) *HTTP {
	h := &HTTP{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
			Help: "Requests of HTTP sinks, by projector and class: 2xx, 3xx, 4xx, 5xx, error (no answer: refused, reset, TLS), timeout (sink.http.timeout)."},
			[]string{"projector", "class"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "http_request_duration_seconds",
			Help:    "Duration of HTTP sink requests, answer included, by projector.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}},
			[]string{"projector"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_retries_total",
			Help: "Retries of HTTP sink requests after a retryable failure (408, 425, 429, 5xx, timeout, connection error), by projector."},
			[]string{"projector"}),
	}
	reg.MustRegister(h.requests, h.duration, h.retries)
	for _, p := range projectors {
		for _, c := range httpsink.Classes {
			h.requests.WithLabelValues(p, c)
		}
		h.retries.WithLabelValues(p)
		h.duration.WithLabelValues(p)
	}
	return h
}

// Request implements httpsink.Observer.
func (h *HTTP) Request(projector, class string, took time.Duration) {
	h.requests.WithLabelValues(projector, class).Inc()
	h.duration.WithLabelValues(projector).Observe(took.Seconds())
}

// Retry implements httpsink.Observer.
func (h *HTTP) Retry(projector string) { h.retries.WithLabelValues(projector).Inc() }
