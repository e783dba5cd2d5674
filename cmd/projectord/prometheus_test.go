package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// The alert rules' `for` durations are divided by forFactor for the real
// Prometheus test, so minutes become seconds; their expressions (and so
// their rate/increase windows) are unchanged. Scrapes and evaluations run
// every promInterval instead of 15s: a ratio of scrape interval to `for`
// close to the shipped one (ProjectordMultipleLeaders holds 4 scrapes).
const (
	forFactor    = 30
	promInterval = 500 * time.Millisecond
)

// requirePrometheus returns the path of the prometheus server binary. When
// it is missing the test is skipped, unless the run is CI's: .ci/run
// installs it (as deploy's requireTool does for promtool).
func requirePrometheus(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("prometheus is not on PATH; .ci/run installs it")
	}
	t.Skipf("prometheus is not on PATH (Debian's prometheus package; .ci/run extracts the binary)")
	return ""
}

type promRule struct {
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

type promGroup struct {
	Name  string     `yaml:"name"`
	Rules []promRule `yaml:"rules"`
}

// scaledRules writes the shipped PrometheusRule's groups as a Prometheus
// rules file, every `for` divided by forFactor, and returns the scaled
// durations by alert name.
func scaledRules(t *testing.T, path string) map[string]time.Duration {
	t.Helper()
	b, err := os.ReadFile("../../deploy/kubernetes/prometheusrule.yaml")
	require.NoError(t, err)
	var pr struct {
		Spec struct {
			Groups []promGroup `yaml:"groups"`
		} `yaml:"spec"`
	}
	require.NoError(t, yaml.Unmarshal(b, &pr))
	require.NotEmpty(t, pr.Spec.Groups)
	fors := map[string]time.Duration{}
	for gi := range pr.Spec.Groups {
		for ri := range pr.Spec.Groups[gi].Rules {
			r := &pr.Spec.Groups[gi].Rules[ri]
			if r.For == "" {
				continue
			}
			d, err := time.ParseDuration(r.For)
			require.NoError(t, err, "%s: for", r.Alert)
			d /= forFactor
			r.For = fmt.Sprintf("%dms", d.Milliseconds())
			fors[r.Alert] = d
		}
	}
	out, err := yaml.Marshal(map[string]any{"groups": pr.Spec.Groups})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, out, 0o600))
	return fors
}

// promTarget is one scraped replica.
type promTarget struct {
	pod  string
	port int
}

// promServer is a real Prometheus on loopback scraping the replicas and
// evaluating the shipped rules.
type promServer struct {
	base string
	out  *syncBuffer
	fors map[string]time.Duration
}

func startPrometheus(t *testing.T, targets []promTarget) *promServer {
	t.Helper()
	bin := requirePrometheus(t)
	dir := t.TempDir()
	fors := scaledRules(t, filepath.Join(dir, "rules.yaml"))
	var sc strings.Builder
	for _, tg := range targets {
		fmt.Fprintf(&sc, "      - targets: ['127.0.0.1:%d']\n        labels: {namespace: test, pod: %s}\n", tg.port, tg.pod)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
  evaluation_interval: %[1]s
rule_files: [rules.yaml]
scrape_configs:
  - job_name: projectord
    static_configs:
%[2]s`, promInterval, sc.String())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	port := freePort(t)
	out := &syncBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port),
		"--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	ps := &promServer{base: fmt.Sprintf("http://127.0.0.1:%d", port), out: out, fors: fors}
	waitFor(t, 60*time.Second, func() bool {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", out.String())
		default:
		}
		code, _ := get(ps.base + "/-/ready")
		return code == 200
	})
	return ps
}

// promAlert is one entry of /api/v1/alerts: pending or firing.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (a promAlert) String() string {
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		if k != "alertname" && k != "severity" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%s{", a.Labels["alertname"])
	for i, k := range keys {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%s=%q", k, a.Labels[k])
	}
	fmt.Fprintf(&b, "} %s", a.State)
	return b.String()
}

func (ps *promServer) alerts() ([]promAlert, error) {
	code, body := get(ps.base + "/api/v1/alerts")
	if code != 200 {
		return nil, fmt.Errorf("/api/v1/alerts: %d %s", code, body)
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("/api/v1/alerts: %s", body)
	}
	return r.Data.Alerts, nil
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string
	Value  float64
}

func (ps *promServer) query(q string) ([]promSample, error) {
	code, body := get(ps.base + "/api/v1/query?query=" + url.QueryEscape(q))
	if code != 200 {
		return nil, fmt.Errorf("query %s: %d %s", q, code, body)
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return nil, err
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query %s: %s", q, body)
	}
	out := make([]promSample, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v", q, s.Value[1])
		}
		out = append(out, promSample{Metric: s.Metric, Value: v})
	}
	return out, nil
}

// scalar returns the single value of q, or ok=false when q has no result.
func (ps *promServer) scalar(q string) (float64, bool) {
	s, err := ps.query(q)
	if err != nil || len(s) != 1 {
		return 0, false
	}
	return s[0].Value, true
}

// alertWatch polls Prometheus and fails the test the moment an alert is in
// a state the scenario forbids.
type alertWatch struct {
	ps *promServer
	// forbidden maps an alert name to the states it must never be in
	// ("pending", "firing").
	forbidden map[string][]string
	polls     int
	seen      map[string]int // "Alert state" -> polls in which it was seen
	last      []promAlert
	// Episodes: since when an alert (by its labels) has been seen in a
	// state, and the longest episode of each alert and state.
	since   map[string]time.Time
	longest map[string]time.Duration
}

func newAlertWatch(ps *promServer) *alertWatch {
	return &alertWatch{ps: ps, forbidden: map[string][]string{}, seen: map[string]int{},
		since: map[string]time.Time{}, longest: map[string]time.Duration{}}
}

// forbid sets the states alert must not be in from now on (none: any).
func (w *alertWatch) forbid(alert string, states ...string) { w.forbidden[alert] = states }

// poll takes one look at /api/v1/alerts and checks it.
func (w *alertWatch) poll(t *testing.T) {
	t.Helper()
	as, err := w.ps.alerts()
	require.NoError(t, err)
	now := time.Now()
	w.polls++
	w.last = as
	current := map[string]bool{}
	for _, a := range as {
		name := a.Labels["alertname"]
		w.seen[name+" "+a.State]++
		current[a.String()] = true
		if _, ok := w.since[a.String()]; !ok {
			w.since[a.String()] = now
		}
		key := name + " " + a.State
		w.longest[key] = max(w.longest[key], now.Sub(w.since[a.String()]))
		for _, s := range w.forbidden[name] {
			require.NotEqual(t, s, a.State, "poll %d: %s (all: %v)", w.polls, a, as)
		}
	}
	for k := range w.since {
		if !current[k] {
			delete(w.since, k)
		}
	}
}

// state returns the state of alert for projector (or "" when it is
// inactive) as of the last poll.
func (w *alertWatch) state(alert, projector string) string {
	for _, a := range w.last {
		if a.Labels["alertname"] == alert && (projector == "" || a.Labels["projector"] == projector) {
			return a.State
		}
	}
	return ""
}

// until polls, checking every sample, until cond holds; it fails the test
// after d.
func (w *alertWatch) until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond) // a fifth of an evaluation interval
	defer tick.Stop()
	for {
		w.poll(t)
		if cond() {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("%s: not within %s (alerts: %v)", what, d, w.last)
		case <-tick.C:
		}
	}
}

// watchFor polls for d, checking every sample.
func (w *alertWatch) watchFor(t *testing.T, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	w.until(t, d+30*time.Second, "watch", func() bool { return time.Now().After(end) })
}

// promReplica is a replica on a fixed port, so that Prometheus' static
// target reaches it again after a restart. Its configuration is
// ob.replica's.
type promReplica struct {
	node, pod, cfg string
	port           int
	base           string
	proc           *proc
}

func (ob *obsBundle) promReplica(t *testing.T, node string, port int, projectors string) *promReplica {
	t.Helper()
	f := replicaConfig(t, node, ob.url, port, 100*time.Millisecond, "", "", projectors)
	r := &promReplica{node: node, pod: "projectord-" + node, cfg: f, port: port, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	r.start(t)
	return r
}

func (r *promReplica) start(t *testing.T) {
	t.Helper()
	r.proc = startProc(t, "run", "--config", r.cfg)
	waitFor(t, 30*time.Second, func() bool {
		code, _ := get(r.base + "/livez")
		return code == 200
	})
}

// leaderOf returns the replica that reports leading projector, scraping
// each directly; nil unless exactly one does.
func leaderOf(rs []*promReplica, projector string) *promReplica {
	var found *promReplica
	for _, r := range rs {
		if r.proc.exitedNow() {
			continue
		}
		m, err := scrape(r.base)
		if err != nil {
			continue
		}
		if m[`projectord_projector_leader{projector="`+projector+`"}`] == 1 {
			if found != nil {
				return nil
			}
			found = r
		}
	}
	return found
}

// promLeader returns the pod Prometheus sees leading projector: the only
// one whose latest projector_leader sample is 1, and the sum over
// replicas 1.
func (ps *promServer) promLeader(projector string) string {
	s, err := ps.query(`projectord_projector_leader{job="projectord",projector="` + projector + `"} == 1`)
	if err != nil || len(s) != 1 {
		return ""
	}
	return s[0].Metric["pod"]
}

// writer inserts events of type A with data {"n": 1} until the test ends.
func (ob *obsBundle) writer(t *testing.T, every time.Duration, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			_, _ = ob.pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
				SELECT 's-' || gen_random_uuid(), 1, 'A', '{"n": 1}' FROM generate_series(1, $1) g`, n)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// TestPrometheusAlertsThroughHandoverAndHalt runs a real Prometheus (the
// shipped rules, `for` divided by forFactor) scraping three real replicas
// of two projectors under a writer, and checks at every poll which alerts
// are pending or firing: through a SIGTERM handover and a kill -9 of the
// new leader MultipleLeaders never fires (nor pends outside a handover) and
// NoLeader never fires; through a halt of p, Halted fires and NoLeader,
// PoisonEvents, Stalled and DatabaseUnreachable do not, with p's lag in
// Prometheus; after `projectord resume p` Halted resolves, one replica
// leads p and its lag returns to 0.
func TestPrometheusAlertsThroughHandoverAndHalt(t *testing.T) {
	t.Parallel()
	requirePrometheus(t)
	start := time.Now()
	ob := setupObs(t)
	_, err := ob.pool.Exec(ob.ctx, `CREATE TABLE applied_p (position bigint PRIMARY KEY, n int NOT NULL CONSTRAINT n_not_negative CHECK (n >= 0))`)
	require.NoError(t, err)
	projectors := `  - name: p
    batch_size: 50
    on_error: {max_attempts: 1, then: halt}
    sink: {sql: {handlers: {A: "INSERT INTO applied_p VALUES (@position, (@data->>'n')::int)"}}}
  - name: q
    batch_size: 50
    sink: {sql: {handlers: {A: "INSERT INTO applied VALUES ('q', @position)"}}}
`
	var rs []*promReplica
	var targets []promTarget
	for _, n := range []string{"a", "b", "c"} {
		r := ob.promReplica(t, "node-"+n, freePort(t), projectors)
		rs = append(rs, r)
		targets = append(targets, promTarget{pod: r.pod, port: r.port})
	}
	ob.writer(t, 50*time.Millisecond, 5)
	ps := startPrometheus(t, targets)
	require.Equal(t, 2*time.Second, ps.fors["ProjectordMultipleLeaders"])
	require.Equal(t, 4*time.Second, ps.fors["ProjectordNoLeader"])
	w := newAlertWatch(ps)
	allUp := func() bool {
		v, ok := ps.scalar(`count(up{job="projectord",namespace="test"} == 1)`)
		return ok && v == 3
	}
	w.until(t, 60*time.Second, "Prometheus sees three replicas up and one leader of each projector", func() bool {
		return allUp() && ps.promLeader("p") != "" && ps.promLeader("q") != ""
	})

	// From here on, at every poll: two leaders is never even pending, and no
	// projector goes without a leader long enough to fire, nor is reported
	// stalled, poisoned, halted or cut off from the database.
	w.forbid("ProjectordMultipleLeaders", "pending", "firing")
	for _, a := range []string{"ProjectordNoLeader", "ProjectordDatabaseUnreachable", "ProjectordProjectorStalled",
		"ProjectordPoisonEvents", "ProjectordProjectorHalted", "ProjectordCoordinationFlapping", "ProjectordDown"} {
		w.forbid(a, "firing")
	}
	w.watchFor(t, 2*ps.fors["ProjectordMultipleLeaders"])

	// Handover by SIGTERM, then a kill -9 of the new leader; each stopped
	// replica is started again on its port, as its supervisor would.
	//
	// Scrapes of two replicas are not simultaneous (the rule's comment):
	// the old leader's last 1, scraped before it let go, and the new
	// leader's first 1 can both be the latest samples at one evaluation,
	// so during a handover ProjectordMultipleLeaders may be pending for an
	// evaluation or two. It must never fire (its for is 4 scrapes), and
	// outside handovers it is never even pending.
	var handovers []time.Duration
	for _, how := range []string{"SIGTERM", "kill -9"} {
		var old *promReplica
		waitFor(t, 30*time.Second, func() bool { old = leaderOf(rs, "p"); return old != nil })
		w.forbid("ProjectordMultipleLeaders", "firing")
		sent := time.Now()
		if how == "SIGTERM" {
			require.NoError(t, old.proc.cmd.Process.Signal(syscall.SIGTERM))
		} else {
			require.NoError(t, old.proc.cmd.Process.Kill())
		}
		w.until(t, 30*time.Second, how+": Prometheus sees another replica lead p", func() bool {
			l := ps.promLeader("p")
			return old.proc.exitedNow() && l != "" && l != old.pod
		})
		handovers = append(handovers, time.Since(sent))
		if how == "SIGTERM" {
			require.NoError(t, old.proc.wait(t, 10*time.Second), "SIGTERM exits 0")
		}
		// Long enough after the handover for a NoLeader or MultipleLeaders
		// it started to fire.
		w.watchFor(t, ps.fors["ProjectordNoLeader"]+2*promInterval)
		w.forbid("ProjectordMultipleLeaders", "pending", "firing")
		old.start(t)
		w.until(t, 30*time.Second, "the restarted replica is scraped again", allUp)
	}
	w.watchFor(t, 2*ps.fors["ProjectordMultipleLeaders"])

	// Halt: an event p cannot apply (n = -1 breaks applied_p's CHECK), and
	// p's on_error is {max_attempts: 1, then: halt}.
	var bad int64
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `INSERT INTO events (stream_id, stream_version, event_type, data)
		VALUES ('bad', 1, 'A', '{"n": -1}') RETURNING global_position`).Scan(&bad))
	haltSent := time.Now()
	w.forbid("ProjectordProjectorHalted") // may now be pending and firing
	w.until(t, 60*time.Second, "ProjectordProjectorHalted fires for p", func() bool {
		return w.state("ProjectordProjectorHalted", "p") == "firing"
	})
	haltFiring := time.Since(haltSent)
	var status string
	var haltedAt int64
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT status, coalesce(halted_position, 0) FROM projectord.checkpoints WHERE projector = 'p'`).
		Scan(&status, &haltedAt))
	require.Equal(t, "halted", status)
	require.Equal(t, bad, haltedAt, "halted on the bad event")
	// Prometheus' view of the halt: every replica reports it, none leads p,
	// and p's lag is exported (by all three) and above 0 as the writer goes on.
	w.until(t, 30*time.Second, "Prometheus sees p halted on three replicas, led by none, with lag", func() bool {
		h, okH := ps.scalar(`count(projectord_projector_state{job="projectord",projector="p",state="halted"} == 1)`)
		l, okL := ps.scalar(`sum(projectord_projector_leader{job="projectord",projector="p"})`)
		n, okN := ps.scalar(`count(projectord_projector_lag_events{job="projectord",projector="p"})`)
		_, okLag := ps.scalar(`max(projectord_projector_lag_events{job="projectord",projector="p"}) > 0`)
		return okH && h == 3 && okL && l == 0 && okN && n == 3 && okLag
	})
	// Held long enough for a NoLeader or DatabaseUnreachable it started to
	// fire (both forbidden from firing all along, PoisonEvents and Stalled
	// too: a halt is neither), Halted firing throughout.
	w.watchFor(t, ps.fors["ProjectordNoLeader"]+2*promInterval)
	require.Equal(t, "firing", w.state("ProjectordProjectorHalted", "p"))
	require.Empty(t, w.state("ProjectordProjectorHalted", "q"))
	_, ok := ps.scalar(`max(projectord_projector_lag_events{job="projectord",projector="p"}) > 0`)
	require.True(t, ok, "Prometheus has p's lag, above 0")
	halted, ok := ps.scalar(`sum(projectord_poison_events_total{job="projectord",projector="p",outcome="halted"})`)
	require.True(t, ok)
	require.Equal(t, 1.0, halted, "the halt is counted once")

	// The read model accepts the event now; the operator resumes p.
	_, err = ob.pool.Exec(ob.ctx, `ALTER TABLE applied_p DROP CONSTRAINT n_not_negative`)
	require.NoError(t, err)
	out, err := exec.Command(binary, "resume", "p", "--config", rs[0].cfg).CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "p resumed")
	resumed := time.Now()
	w.until(t, 60*time.Second, "Halted resolves, one replica leads p, its lag returns to 0", func() bool {
		lag, ok := ps.scalar(`max(projectord_projector_lag_events{job="projectord",projector="p"})`)
		return w.state("ProjectordProjectorHalted", "p") == "" && ps.promLeader("p") != "" && ok && lag == 0
	})
	recovered := time.Since(resumed)
	w.forbid("ProjectordProjectorHalted", "pending", "firing")
	var n int
	require.NoError(t, ob.pool.QueryRow(ob.ctx, `SELECT n FROM applied_p WHERE position = $1`, bad).Scan(&n))
	require.Equal(t, -1, n, "the event it halted on is applied")
	w.watchFor(t, ps.fors["ProjectordNoLeader"]+2*promInterval)

	t.Logf("handovers as Prometheus saw them: SIGTERM %s, kill -9 %s; halt firing %s after the bad event; resumed, led and caught up %s after resume; "+
		"%d polls of /api/v1/alerts, alerts seen (polls): %v, longest episodes: %v; %s in all",
		handovers[0].Round(time.Millisecond), handovers[1].Round(time.Millisecond), haltFiring.Round(time.Millisecond), recovered.Round(time.Millisecond),
		w.polls, w.seen, w.longest, time.Since(start).Round(time.Second))
}
