package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/projectord.json")
	require.NoError(t, err)
	var d dashboard
	require.NoError(t, json.Unmarshal(b, &d))
	return d
}

// query is one PromQL expression of the dashboard and where it is.
type query struct{ where, expr string }

// dashboardQueries returns every PromQL expression of the dashboard: panel
// targets and query variables.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	d := loadDashboard(t)
	var out []query
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, query{fmt.Sprintf("panel %q %s", p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			require.NoError(t, json.Unmarshal(v.Query, &obj), "variable %s", v.Name)
			q = obj.Query
		}
		out = append(out, query{"variable " + v.Name, q})
	}
	return out
}

// grafanaVars replaces Grafana's variables with values PromQL accepts.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$job", ".*", "$projector", ".*")

func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	t.Parallel()
	qs := dashboardQueries(t)
	require.NotEmpty(t, qs)
	for _, q := range qs {
		require.NotEmpty(t, q.expr, q.where)
		requireKnownMetrics(t, q.where, q.expr)
	}
}

func TestDashboardStructure(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	require.Equal(t, "projectord", d.UID)
	var dsVar bool
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			require.Equal(t, "datasource", v.Name)
			require.JSONEq(t, `"prometheus"`, string(v.Query))
			dsVar = true
		}
		if v.Datasource != nil {
			require.Equal(t, "${datasource}", v.Datasource.UID, "variable %s", v.Name)
		}
	}
	require.True(t, dsVar, "a datasource template variable")

	ids := map[int]bool{}
	for _, p := range d.Panels {
		require.False(t, ids[p.ID], "panel ids are unique: %d", p.ID)
		ids[p.ID] = true
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, p.Title)
		require.Positive(t, p.GridPos.W, p.Title)
		require.Positive(t, p.GridPos.H, p.Title)
		if p.Type == "row" {
			continue
		}
		require.NotEmpty(t, p.Targets, p.Title)
		require.NotNil(t, p.Datasource, p.Title)
		require.Equal(t, "${datasource}", p.Datasource.UID, p.Title)
		for _, tg := range p.Targets {
			require.NotNil(t, tg.Datasource, p.Title)
			require.Equal(t, "${datasource}", tg.Datasource.UID, p.Title)
		}
	}

	// The panels an operator looks for first.
	var all strings.Builder
	for _, q := range dashboardQueries(t) {
		all.WriteString(q.expr + "\n")
	}
	for _, want := range []string{
		"projectord_projector_lag_events", "projectord_projector_lag_seconds",
		"rate(projectord_events_processed_total", "projectord_projector_leader",
		"projectord_projector_errors_total", "histogram_quantile(0.99, sum by (projector, le) (rate(projectord_batch_duration_seconds_bucket",
		"projectord_source_horizon_age_seconds",
	} {
		require.Contains(t, all.String(), want)
	}
}
