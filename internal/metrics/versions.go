package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Versions of projectors (README, "Rebuild without downtime"): a series per
// version that exists in this replica's target databases, labelled by the
// configured name and the version, so the existing per-projector series
// (labelled by the version's checkpoint name: "name" for version 1,
// "name@vN" after) keep their labels.
var (
	versionLiveDesc = prometheus.NewDesc(namespace+"_projector_version_live",
		"1 for the live version of the projector, 0 for the others that exist (building, superseded, retired).", []string{"projector", "version"}, nil)
	versionLagDesc = prometheus.NewDesc(namespace+"_projector_version_lag_events",
		"Committed events the live or building version has not applied yet, capped at 1e6.", []string{"projector", "version"}, nil)
	versionCatchUpDesc = prometheus.NewDesc(namespace+"_projector_version_catch_up_seconds",
		"Estimated seconds until the building version is caught up, at its recent rate (absent until it progresses).", []string{"projector", "version"}, nil)
)

// versionCollector exports the versions of the status snapshot, at scrape
// time, under the snapshot's freshness rule: nothing while it is stale.
type versionCollector struct{ m *Metrics }

func (c versionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- versionLiveDesc
	ch <- versionLagDesc
	ch <- versionCatchUpDesc
}

func (c versionCollector) Collect(ch chan<- prometheus.Metric) {
	s, fresh := c.m.current()
	if !fresh {
		return
	}
	for _, v := range s.Versions {
		version := strconv.Itoa(v.Version)
		live := 0.0
		if v.Live {
			live = 1
		}
		ch <- prometheus.MustNewConstMetric(versionLiveDesc, prometheus.GaugeValue, live, v.Projector, version)
		if v.State == "live" || v.State == "building" {
			ch <- prometheus.MustNewConstMetric(versionLagDesc, prometheus.GaugeValue, float64(v.LagEvents), v.Projector, version)
		}
		if v.CatchUpSeconds != nil {
			ch <- prometheus.MustNewConstMetric(versionCatchUpDesc, prometheus.GaugeValue, *v.CatchUpSeconds, v.Projector, version)
		}
	}
}
