// Package deploy_test checks the deployment files under deploy/ (and the
// Dockerfile) against the daemon they deploy: metric names, ports, probe
// paths, timeouts, configuration keys. It runs in `go test ./...`; checks
// that need an external tool (promtool, systemd-analyze, kubectl) run when
// the tool is on PATH.
package deploy_test

import (
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/projectord/projectord/internal/metrics"
	"github.com/projectord/projectord/internal/runner"
	"github.com/projectord/projectord/internal/store"
)

// foreignMetrics are the only series the rules and dashboard may use that
// projectord does not export: Prometheus' own per-target `up`.
var foreignMetrics = map[string]bool{"up": true}

var (
	exportedOnce  sync.Once
	exportedNames map[string]bool
	exportedErr   error
)

// exported returns every series name a projectord replica exports, from a
// real registry wired as the daemon wires it, with one projector led by this
// replica (lag and positions exist only on the leader) and one pool.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	exportedOnce.Do(func() {
		reg := prometheus.NewRegistry()
		m := metrics.New(reg, []string{"p"}, metrics.BuildInfo{Version: "v", Commit: "c", GoVersion: "go"})
		// A pool that never connects: pgxpool dials lazily, Stat() is memory.
		pool, err := pgxpool.New(t.Context(), "postgres://u@127.0.0.1:1/db?connect_timeout=1")
		if err != nil {
			exportedErr = err
			return
		}
		defer pool.Close()
		reg.MustRegister(metrics.NewPoolCollector(func() map[string]*pgxpool.Pool {
			return map[string]*pgxpool.Pool{"source": pool}
		}))
		m.StateChanged("p", runner.StateLeader)
		m.BatchCommitted("p", 10, store.Cursor{Position: 10}, 5*time.Millisecond)
		m.Snapshot(runner.Snapshot{Head: 20, Horizon: runner.HorizonStatus{AgeSeconds: 1},
			Projectors: []runner.ProjectorStatus{{Name: "p", Position: 10, LagEvents: 10, LagSeconds: 1}},
			Versions: []runner.VersionStatus{{Projector: "p", Version: 1, Checkpoint: "p", State: "live", Live: true},
				{Projector: "p", Version: 2, Checkpoint: "p@v2", State: "building", LagEvents: 5, CatchUpSeconds: new(float64)}}})
		mfs, err := reg.Gather()
		if err != nil {
			exportedErr = err
			return
		}
		exportedNames = map[string]bool{}
		for _, mf := range mfs {
			name := mf.GetName()
			switch mf.GetType().String() {
			case "HISTOGRAM", "GAUGE_HISTOGRAM":
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exportedNames[name+s] = true
				}
			case "SUMMARY":
				exportedNames[name], exportedNames[name+"_sum"], exportedNames[name+"_count"] = true, true, true
			default:
				exportedNames[name] = true
			}
		}
	})
	require.NoError(t, exportedErr)
	return exportedNames
}

func TestExportedMetricsAreComplete(t *testing.T) {
	t.Parallel()
	names := exported(t)
	// A guard on the helper: if wiring changes hid a family, every check
	// using it would pass vacuously for that family.
	for _, n := range []string{
		"projectord_projector_leader", "projectord_projector_state", "projectord_projector_checkpoint_position",
		"projectord_source_head_position", "projectord_projector_lag_events", "projectord_projector_lag_seconds",
		"projectord_events_processed_total", "projectord_batches_total", "projectord_projector_errors_total",
		"projectord_batch_duration_seconds_bucket", "projectord_leadership_changes_total",
		"projectord_coordination_heartbeat_failures_total", "projectord_source_horizon_age_seconds",
		"projectord_source_unsafe_ordering", "projectord_source_unindexed", "projectord_source_reads_total", "projectord_shared_read_batches_total", "projectord_db_pool_acquired_conns", "projectord_db_pool_max_conns",
		"projectord_db_pool_empty_acquires_total", "projectord_build_info",
		"projectord_commit_transactions_total", "projectord_commit_group_batches_bucket",
		"projectord_projector_version_live", "projectord_projector_version_lag_events", "projectord_projector_version_catch_up_seconds",
	} {
		require.True(t, names[n], "%s is not exported", n)
	}
	require.False(t, names["projectord_batch_duration_seconds"], "a histogram's base name is not a series")
}

// requireKnownMetrics fails unless every metric name in expr is exported by
// projectord or listed in foreignMetrics.
func requireKnownMetrics(t *testing.T, where, expr string) {
	t.Helper()
	names, err := metricNames(expr)
	require.NoError(t, err, "%s: %s", where, expr)
	require.NotEmpty(t, names, "%s: no metric in %q", where, expr)
	known := exported(t)
	for _, n := range names {
		require.True(t, known[n] || foreignMetrics[n], "%s: %s is not a metric projectord exports (expr %q)", where, n, expr)
	}
}

// PromQL's functions and aggregations, as used in deploy/; any other name
// followed by "(" is an error, so a misspelt function is caught too.
var promqlFunctions = map[string]bool{
	"sum": true, "max": true, "min": true, "avg": true, "count": true, "rate": true, "irate": true,
	"increase": true, "delta": true, "deriv": true, "histogram_quantile": true, "absent": true,
	"max_over_time": true, "min_over_time": true, "avg_over_time": true, "changes": true, "resets": true,
	"vector": true, "scalar": true, "clamp_min": true, "clamp_max": true, "label_replace": true, "time": true,
	"topk": true, "bottomk": true, "quantile": true, "sort": true, "sort_desc": true, "round": true,
}

var promqlKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true,
}

var (
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	reMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	reRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	reGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	reToken    = regexp.MustCompile(`\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-zA-Z]*|[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// metricNames returns the metric names a PromQL expression selects. It is
// a lexer, not a parser (the Prometheus parser is not a dependency), good
// for the expressions in deploy/: strings, label matchers, ranges and
// grouping label lists are removed, then every remaining identifier that
// is not a function call or a keyword is a metric name.
func metricNames(expr string) ([]string, error) {
	s := reString.ReplaceAllString(labelValuesSelector(expr), `""`)
	s = reMatchers.ReplaceAllString(s, "")
	s = reRange.ReplaceAllString(s, "")
	s = reGrouping.ReplaceAllString(s, " ")
	if strings.ContainsAny(s, "{}[]$") {
		return nil, errUnlexable(expr)
	}
	seen := map[string]bool{}
	for _, loc := range reToken.FindAllStringIndex(s, -1) {
		tok := s[loc[0]:loc[1]]
		if tok[0] >= '0' && tok[0] <= '9' || promqlKeywords[strings.ToLower(tok)] {
			continue
		}
		if strings.HasPrefix(strings.TrimLeft(s[loc[1]:], " \t\n"), "(") {
			if !promqlFunctions[tok] {
				return nil, errUnknownFunction(tok)
			}
			continue
		}
		seen[tok] = true
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

var reLabelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_]\w*\s*\)\s*$`)

// labelValuesSelector returns the selector of Grafana's
// label_values(selector, label), and any other expression unchanged.
func labelValuesSelector(expr string) string {
	if m := reLabelValues.FindStringSubmatch(expr); m != nil {
		return m[1]
	}
	return expr
}

type errUnlexable string

func (e errUnlexable) Error() string { return "cannot lex PromQL expression: " + string(e) }

type errUnknownFunction string

func (e errUnknownFunction) Error() string { return "unknown PromQL function " + string(e) }

func TestMetricNames(t *testing.T) {
	t.Parallel()
	cases := map[string][]string{
		`sum by (namespace, job, projector) (projectord_projector_leader) > 1`:                                                      {"projectord_projector_leader"},
		`(max by (projector) (a_lag{x="y"}) > 0) and on (projector) (sum by (projector) (rate(b_total[5m])) == 0)`:                  {"a_lag", "b_total"},
		`histogram_quantile(0.99, sum by (projector, le) (rate(x_bucket{job=~"$job", projector=~"$projector"}[$__rate_interval])))`: {"x_bucket"},
		`absent(up{job="projectord"} == 1)`:                                                 {"up"},
		`count(max by (p) (s{state="halted"}) == 1) or vector(0)`:                           {"s"},
		`label_values(projectord_projector_leader{job=~"$job"}, projector)`:                 {"projectord_projector_leader"},
		`x > 1e6 unless ignoring (reason) y`:                                                {"x", "y"},
		`sum(z{a="}", b='{'})`:                                                              {"z"},
		`max by (namespace, job) (projectord_source_horizon_age_seconds) > 300`:             {"projectord_source_horizon_age_seconds"},
		`sum by (instance, pool) (rate(projectord_db_pool_empty_acquires_total{}[1m])) > 0`: {"projectord_db_pool_empty_acquires_total"},
	}
	for expr, want := range cases {
		got, err := metricNames(expr)
		require.NoError(t, err, expr)
		require.Equal(t, want, got, expr)
	}
	_, err := metricNames(`sum(rat(x[5m]))`)
	require.ErrorContains(t, err, "unknown PromQL function rat")
}
