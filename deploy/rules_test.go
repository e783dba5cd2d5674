package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

type prometheusRule struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	Spec       struct {
		Groups []ruleGroup `yaml:"groups"`
	} `yaml:"spec"`
}

type ruleGroup struct {
	Name  string `yaml:"name"`
	Rules []rule `yaml:"rules"`
}

type rule struct {
	Alert       string            `yaml:"alert,omitempty"`
	Record      string            `yaml:"record,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

func loadRules(t *testing.T) prometheusRule {
	t.Helper()
	var pr prometheusRule
	decodeStrict(t, "kubernetes/prometheusrule.yaml", &pr)
	return pr
}

func TestPrometheusRuleStructure(t *testing.T) {
	t.Parallel()
	pr := loadRules(t)
	require.Equal(t, "monitoring.coreos.com/v1", pr.APIVersion)
	require.Equal(t, "PrometheusRule", pr.Kind)
	require.NotEmpty(t, pr.Spec.Groups)
	alerts := map[string]rule{}
	for _, g := range pr.Spec.Groups {
		require.NotEmpty(t, g.Name)
		require.NotEmpty(t, g.Rules)
		for _, r := range g.Rules {
			require.NotEmpty(t, r.Alert, "only alerting rules: %q", r.Expr)
			require.NotContains(t, alerts, r.Alert, "alert names are unique")
			alerts[r.Alert] = r
			require.NotEmpty(t, r.Expr, r.Alert)
			if r.For != "" {
				_, err := time.ParseDuration(r.For)
				require.NoError(t, err, "%s: for", r.Alert)
			}
			require.Contains(t, []string{"warning", "critical"}, r.Labels["severity"], "%s: severity", r.Alert)
			require.NotEmpty(t, r.Annotations["summary"], "%s: summary", r.Alert)
			require.NotEmpty(t, r.Annotations["description"], "%s: description", r.Alert)
			requireKnownMetrics(t, "alert "+r.Alert, r.Expr)
		}
	}
	// What the deployment promises to watch.
	for _, a := range []string{
		"ProjectordProjectorLagHigh", "ProjectordProjectorStalled", "ProjectordNoLeader",
		"ProjectordMultipleLeaders", "ProjectordProjectorHalted", "ProjectordDatabaseUnreachable",
		"ProjectordHorizonHeld",
	} {
		require.Contains(t, alerts, a)
	}
	// Scrapes of replicas are not simultaneous: a *_over_time window makes
	// every clean handover look like two leaders (rules_test.yaml shows it).
	require.NotContains(t, alerts["ProjectordMultipleLeaders"].Expr, "_over_time")
	// A rule's `for` must exceed the ServiceMonitor's scrape interval, or
	// the overlap of one handover's scrapes fires it.
	var sm serviceMonitor
	decodeStrict(t, "kubernetes/servicemonitor.yaml", &sm)
	require.Len(t, sm.Spec.Endpoints, 1)
	scrape, err := time.ParseDuration(sm.Spec.Endpoints[0].Interval)
	require.NoError(t, err)
	hold, err := time.ParseDuration(alerts["ProjectordMultipleLeaders"].For)
	require.NoError(t, err)
	require.GreaterOrEqual(t, hold, 3*scrape)
}

// TestPrometheusRulesWithPromtool checks the rules' PromQL and templates
// with `promtool check rules`, the alerts' behaviour with `promtool test
// rules` (testdata/rules_test.yaml), the descriptions that quote $value
// (testdata/rules_annotations_test.yaml), and the dashboard's queries'
// syntax.
// .ci/run installs promtool, so in CI its absence is a failure.
func TestPrometheusRulesWithPromtool(t *testing.T) {
	t.Parallel()
	promtool := requireTool(t, "promtool", true)
	pr := loadRules(t)
	dir := t.TempDir()

	full := filepath.Join(dir, "rules_full.yaml")
	writeYAML(t, full, map[string]any{"groups": pr.Spec.Groups})
	runTool(t, dir, promtool, "check", "rules", full)
	// The alerts whose descriptions quote $value, with their annotations.
	annotated, err := os.ReadFile("testdata/rules_annotations_test.yaml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules_annotations_test.yaml"), annotated, 0o600))
	runTool(t, dir, promtool, "test", "rules", "rules_annotations_test.yaml")

	// promtool test rules compares annotations too; the tests are about
	// when alerts fire, so they run against the rules without them.
	for gi := range pr.Spec.Groups {
		for ri := range pr.Spec.Groups[gi].Rules {
			pr.Spec.Groups[gi].Rules[ri].Annotations = nil
		}
	}
	writeYAML(t, filepath.Join(dir, "rules.yaml"), map[string]any{"groups": pr.Spec.Groups})
	tests, err := os.ReadFile("testdata/rules_test.yaml")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules_test.yaml"), tests, 0o600))
	runTool(t, dir, promtool, "test", "rules", "rules_test.yaml")

	// The dashboard's queries as recording rules, Grafana's variables
	// replaced, so promtool parses them.
	var recs []rule
	for i, q := range dashboardQueries(t) {
		recs = append(recs, rule{Record: fmt.Sprintf("projectord_dashboard_query_%d", i), Expr: grafanaVars.Replace(labelValuesSelector(q.expr))})
	}
	dash := filepath.Join(dir, "dashboard_rules.yaml")
	writeYAML(t, dash, map[string]any{"groups": []ruleGroup{{Name: "dashboard", Rules: recs}}})
	runTool(t, dir, promtool, "check", "rules", dash)
}

// requireTool returns the path of an external tool. When it is missing the
// test is skipped, unless requiredInCI and the run is CI's (.ci/run installs
// such tools, so a missing one there is a broken install step).
func requireTool(t *testing.T, name string, requiredInCI bool) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if requiredInCI && os.Getenv("CI") != "" {
		t.Fatalf("%s is not on PATH; .ci/run installs it", name)
	}
	t.Skipf("%s is not on PATH; the structural tests are the check", name)
	return ""
}

func runTool(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s %v:\n%s", name, args, out)
	return string(out)
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o600))
}
