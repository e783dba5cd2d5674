package metrics

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// PoolCollector exports pgxpool.Stat() of every named pool, read at scrape
// time from memory (no database work).
type PoolCollector struct {
	pools func() map[string]*pgxpool.Pool

	acquired, idle, total, max, acquires, acquireSeconds, emptyAcquires, canceled, newConns *prometheus.Desc
}

// NewPoolCollector returns a collector over the pools pools() returns, by name.
func NewPoolCollector(pools func() map[string]*pgxpool.Pool) *PoolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "db_pool", name), help, []string{"pool"}, nil)
	}
	return &PoolCollector{
		pools:          pools,
		acquired:       d("acquired_conns", "Connections currently checked out."),
		idle:           d("idle_conns", "Idle connections in the pool."),
		total:          d("total_conns", "All connections of the pool."),
		max:            d("max_conns", "The pool's size limit."),
		acquires:       d("acquires_total", "Successful acquires."),
		acquireSeconds: d("acquire_duration_seconds_total", "Time spent acquiring connections."),
		emptyAcquires:  d("empty_acquires_total", "Acquires that had to wait for a connection."),
		canceled:       d("canceled_acquires_total", "Acquires cancelled by their context."),
		newConns:       d("new_conns_total", "Connections opened."),
	}
}

// Describe implements prometheus.Collector.
func (c *PoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.acquires, c.acquireSeconds, c.emptyAcquires, c.canceled, c.newConns} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PoolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, p := range c.pools() {
		s := p.Stat()
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, name)
		}
		k := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, name)
		}
		g(c.acquired, float64(s.AcquiredConns()))
		g(c.idle, float64(s.IdleConns()))
		g(c.total, float64(s.TotalConns()))
		g(c.max, float64(s.MaxConns()))
		k(c.acquires, float64(s.AcquireCount()))
		k(c.acquireSeconds, s.AcquireDuration().Seconds())
		k(c.emptyAcquires, float64(s.EmptyAcquireCount()))
		k(c.canceled, float64(s.CanceledAcquireCount()))
		k(c.newConns, float64(s.NewConnsCount()))
	}
}
