package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/projectord/projectord/internal/config"
)

// The manifests are decoded strictly into the structs below: a field the
// structs do not know (a typo such as readinesProbe, or a field added
// without a check) fails the test. Add fields here when adding them there.

type meta struct {
	Name   string            `yaml:"name"`
	Labels map[string]string `yaml:"labels"`
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type kustomization struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Labels     []struct {
		Pairs map[string]string `yaml:"pairs"`
	} `yaml:"labels"`
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
	} `yaml:"configMapGenerator"`
	Images []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	} `yaml:"images"`
}

type serviceAccount struct {
	APIVersion                   string `yaml:"apiVersion"`
	Kind                         string `yaml:"kind"`
	Metadata                     meta   `yaml:"metadata"`
	AutomountServiceAccountToken *bool  `yaml:"automountServiceAccountToken"`
}

type deployment struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	Spec       struct {
		Replicas             int           `yaml:"replicas"`
		RevisionHistoryLimit int           `yaml:"revisionHistoryLimit"`
		Selector             labelSelector `yaml:"selector"`
		Strategy             struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxSurge       int `yaml:"maxSurge"`
				MaxUnavailable int `yaml:"maxUnavailable"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		Template struct {
			Metadata meta    `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	ServiceAccountName            string `yaml:"serviceAccountName"`
	AutomountServiceAccountToken  *bool  `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            *bool  `yaml:"enableServiceLinks"`
	TerminationGracePeriodSeconds int    `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   bool           `yaml:"runAsNonRoot"`
		RunAsUser      int            `yaml:"runAsUser"`
		RunAsGroup     int            `yaml:"runAsGroup"`
		FSGroup        int            `yaml:"fsGroup"`
		SeccompProfile seccompProfile `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		MaxSkew           int           `yaml:"maxSkew"`
		TopologyKey       string        `yaml:"topologyKey"`
		WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
		LabelSelector     labelSelector `yaml:"labelSelector"`
		MatchLabelKeys    []string      `yaml:"matchLabelKeys"`
	} `yaml:"topologySpreadConstraints"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode int    `yaml:"defaultMode"`
			Items       []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type seccompProfile struct {
	Type string `yaml:"type"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	LivenessProbe  probe `yaml:"livenessProbe"`
	ReadinessProbe probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
		SeccompProfile seccompProfile `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type service struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	Spec       struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
			Protocol   string `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type podDisruptionBudget struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	Spec       struct {
		MinAvailable               int           `yaml:"minAvailable"`
		Selector                   labelSelector `yaml:"selector"`
		UnhealthyPodEvictionPolicy string        `yaml:"unhealthyPodEvictionPolicy"`
	} `yaml:"spec"`
}

type networkPolicyPort struct {
	Port     string `yaml:"port"`
	Protocol string `yaml:"protocol"`
}

type networkPolicy struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	Spec       struct {
		PodSelector labelSelector `yaml:"podSelector"`
		PolicyTypes []string      `yaml:"policyTypes"`
		Ingress     []struct {
			From []struct {
				NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
				PodSelector       *labelSelector `yaml:"podSelector"`
			} `yaml:"from"`
			Ports []networkPolicyPort `yaml:"ports"`
		} `yaml:"ingress"`
		Egress []struct {
			Ports []networkPolicyPort `yaml:"ports"`
		} `yaml:"egress"`
	} `yaml:"spec"`
}

type serviceMonitor struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   meta   `yaml:"metadata"`
	Spec       struct {
		JobLabel  string        `yaml:"jobLabel"`
		Selector  labelSelector `yaml:"selector"`
		Endpoints []struct {
			Port          string `yaml:"port"`
			Path          string `yaml:"path"`
			Interval      string `yaml:"interval"`
			ScrapeTimeout string `yaml:"scrapeTimeout"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

// decodeStrict decodes the single YAML document in path (relative to
// deploy/) into v, rejecting unknown fields.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	require.NoError(t, dec.Decode(v), path)
	var extra any
	require.ErrorIs(t, dec.Decode(&extra), io.EOF, "%s: one document per file", path)
}

// k8s is the kustomize base, decoded.
type k8s struct {
	kust   kustomization
	sa     serviceAccount
	deploy deployment
	svc    service
	pdb    podDisruptionBudget
	netpol networkPolicy
	sm     serviceMonitor
	pr     prometheusRule
}

func loadK8s(t *testing.T) *k8s {
	t.Helper()
	k := &k8s{}
	decodeStrict(t, "kubernetes/kustomization.yaml", &k.kust)
	byFile := map[string]any{
		"serviceaccount.yaml": &k.sa, "deployment.yaml": &k.deploy, "service.yaml": &k.svc,
		"poddisruptionbudget.yaml": &k.pdb, "networkpolicy.yaml": &k.netpol,
		"servicemonitor.yaml": &k.sm, "prometheusrule.yaml": &k.pr,
	}
	require.ElementsMatch(t, keys(byFile), k.kust.Resources, "kustomization.yaml lists exactly the manifests")
	for f, v := range byFile {
		decodeStrict(t, filepath.Join("kubernetes", f), v)
	}
	return k
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestKustomizationListsEveryFile(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	require.Equal(t, "kustomize.config.k8s.io/v1beta1", k.kust.APIVersion)
	require.Equal(t, "Kustomization", k.kust.Kind)
	listed := slices.Clone(k.kust.Resources)
	for _, g := range k.kust.ConfigMapGenerator {
		listed = append(listed, g.Files...)
	}
	entries, err := os.ReadDir("kubernetes")
	require.NoError(t, err)
	for _, e := range entries {
		if e.Name() == "kustomization.yaml" {
			continue
		}
		require.Contains(t, listed, e.Name(), "kubernetes/%s is not used by kustomization.yaml", e.Name())
	}
}

func TestKubernetesKindsAndAPIs(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	for _, c := range []struct{ gotAPI, gotKind, api, kind string }{
		{k.sa.APIVersion, k.sa.Kind, "v1", "ServiceAccount"},
		{k.deploy.APIVersion, k.deploy.Kind, "apps/v1", "Deployment"},
		{k.svc.APIVersion, k.svc.Kind, "v1", "Service"},
		{k.pdb.APIVersion, k.pdb.Kind, "policy/v1", "PodDisruptionBudget"},
		{k.netpol.APIVersion, k.netpol.Kind, "networking.k8s.io/v1", "NetworkPolicy"},
		{k.sm.APIVersion, k.sm.Kind, "monitoring.coreos.com/v1", "ServiceMonitor"},
		{k.pr.APIVersion, k.pr.Kind, "monitoring.coreos.com/v1", "PrometheusRule"},
	} {
		require.Equal(t, c.api, c.gotAPI, c.kind)
		require.Equal(t, c.kind, c.gotKind)
	}
}

// podLabels are the labels every selector must match.
func (k *k8s) podLabels() map[string]string { return k.deploy.Spec.Template.Metadata.Labels }

func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestSelectorsMatchThePods(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	pods := k.podLabels()
	require.True(t, matches(k.deploy.Spec.Selector.MatchLabels, pods), "deployment selector")
	require.True(t, matches(k.svc.Spec.Selector, pods), "service selector")
	require.True(t, matches(k.pdb.Spec.Selector.MatchLabels, pods), "PDB selector")
	require.True(t, matches(k.netpol.Spec.PodSelector.MatchLabels, pods), "NetworkPolicy podSelector")
	require.True(t, matches(k.sm.Spec.Selector.MatchLabels, k.svc.Metadata.Labels), "ServiceMonitor selects the Service")
	for _, c := range k.deploy.Spec.Template.Spec.TopologySpreadConstraints {
		require.True(t, matches(c.LabelSelector.MatchLabels, pods), "spread constraint on %s", c.TopologyKey)
	}
	// jobLabel names the Service label whose value becomes job=, which the
	// rules select on.
	require.Equal(t, "projectord", k.svc.Metadata.Labels[k.sm.Spec.JobLabel])
}

// defaultPort is the port of http.listen's default (":7464").
func defaultPort(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(config.Default().HTTP.Listen)
	require.NoError(t, err)
	port, err := strconv.Atoi(p)
	require.NoError(t, err)
	return port
}

func (k *k8s) container(t *testing.T) container {
	t.Helper()
	cs := k.deploy.Spec.Template.Spec.Containers
	require.Len(t, cs, 1)
	return cs[0]
}

func TestPortsAndProbesMatchTheDaemon(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	c := k.container(t)
	port := defaultPort(t)
	require.Equal(t, 7464, port, "README documents :7464")
	require.Len(t, c.Ports, 1)
	require.Equal(t, "metrics", c.Ports[0].Name)
	require.Equal(t, port, c.Ports[0].ContainerPort)

	require.Len(t, k.svc.Spec.Ports, 1)
	require.Equal(t, "metrics", k.svc.Spec.Ports[0].Name)
	require.Equal(t, port, k.svc.Spec.Ports[0].Port)
	require.Equal(t, "metrics", k.svc.Spec.Ports[0].TargetPort)
	require.Len(t, k.sm.Spec.Endpoints, 1)
	require.Equal(t, "metrics", k.sm.Spec.Endpoints[0].Port)
	require.Equal(t, "/metrics", k.sm.Spec.Endpoints[0].Path)
	interval, err := time.ParseDuration(k.sm.Spec.Endpoints[0].Interval)
	require.NoError(t, err)
	timeout, err := time.ParseDuration(k.sm.Spec.Endpoints[0].ScrapeTimeout)
	require.NoError(t, err)
	require.Less(t, timeout, interval)

	require.Equal(t, "/livez", c.LivenessProbe.HTTPGet.Path)
	require.Equal(t, "/readyz", c.ReadinessProbe.HTTPGet.Path)
	for _, p := range []probe{c.LivenessProbe, c.ReadinessProbe} {
		require.Equal(t, "metrics", p.HTTPGet.Port)
		require.Positive(t, p.PeriodSeconds)
		require.Positive(t, p.FailureThreshold)
		require.Positive(t, p.TimeoutSeconds)
	}
	// The paths answer on the daemon's server (probes_test.go).
	requireServedPaths(t, c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path, k.sm.Spec.Endpoints[0].Path)

	// The effective configuration in the ConfigMap listens on the port too.
	cfg := loadShippedConfig(t, "kubernetes/projectord.yaml", k.env(t))
	_, p, err := net.SplitHostPort(cfg.HTTP.Listen)
	require.NoError(t, err)
	require.Equal(t, strconv.Itoa(port), p)
}

func TestGracePeriodCoversShutdownTimeout(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	grace := time.Duration(k.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	require.Greater(t, grace, config.Default().ShutdownTimeout)
	cfg := loadShippedConfig(t, "kubernetes/projectord.yaml", k.env(t))
	require.Greater(t, grace, cfg.ShutdownTimeout, "the ConfigMap's shutdown_timeout")
}

func TestDeploymentShape(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	spec := k.deploy.Spec
	require.Equal(t, 2, spec.Replicas)
	require.Equal(t, 0, spec.Strategy.RollingUpdate.MaxUnavailable, "a standby stays during rollouts")
	var hostname bool
	for _, c := range spec.Template.Spec.TopologySpreadConstraints {
		if c.TopologyKey == "kubernetes.io/hostname" {
			hostname = true
			require.Equal(t, 1, c.MaxSkew)
			require.Equal(t, "DoNotSchedule", c.WhenUnsatisfiable)
		}
	}
	require.True(t, hostname, "replicas spread over nodes")
	require.Equal(t, 1, k.pdb.Spec.MinAvailable)
	require.Equal(t, k.sa.Metadata.Name, spec.Template.Spec.ServiceAccountName)
	require.False(t, *spec.Template.Spec.AutomountServiceAccountToken)

	c := k.container(t)
	require.Equal(t, []string{"run", "--config", "/etc/projectord/projectord.yaml"}, c.Args)
	require.Contains(t, config.DefaultLookPaths(), c.Args[2], "also found without --config")
	require.NotEmpty(t, c.Resources.Requests["cpu"])
	require.NotEmpty(t, c.Resources.Requests["memory"])
	require.NotEmpty(t, c.Resources.Limits["memory"])
	require.Len(t, k.kust.Images, 1)
	require.Equal(t, c.Image, k.kust.Images[0].Name, "kustomize's images: sets the container's image")
}

func TestRestrictedSecurityContext(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	pod := k.deploy.Spec.Template.Spec
	require.True(t, pod.SecurityContext.RunAsNonRoot)
	var user string
	for _, i := range parseDockerfile(t) {
		if i.cmd == "USER" {
			user = i.args
		}
	}
	require.Equal(t, user, strconv.Itoa(pod.SecurityContext.RunAsUser)+":"+strconv.Itoa(pod.SecurityContext.RunAsGroup),
		"the image's user (distroless nonroot)")
	require.Equal(t, "RuntimeDefault", pod.SecurityContext.SeccompProfile.Type)
	sc := k.container(t).SecurityContext
	require.NotNil(t, sc.RunAsNonRoot)
	require.True(t, *sc.RunAsNonRoot)
	require.NotNil(t, sc.ReadOnlyRootFilesystem)
	require.True(t, *sc.ReadOnlyRootFilesystem)
	require.NotNil(t, sc.AllowPrivilegeEscalation)
	require.False(t, *sc.AllowPrivilegeEscalation)
	require.Equal(t, []string{"ALL"}, sc.Capabilities.Drop)
	require.Equal(t, "RuntimeDefault", sc.SeccompProfile.Type)
}

// env returns the container's environment as the daemon sees it, with the
// pod name for fieldRef metadata.name and the secret file written to a
// temporary directory in place of its mount path.
func (k *k8s) env(t *testing.T) map[string]string {
	t.Helper()
	c := k.container(t)
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	secretDir := t.TempDir()
	var secretMount string
	for _, v := range k.deploy.Spec.Template.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		require.Empty(t, secretMount, "one secret volume")
		secretMount = mounts[v.Name]
		require.NotEmpty(t, secretMount, "secret volume %s is mounted", v.Name)
		for _, it := range v.Secret.Items {
			require.NoError(t, os.WriteFile(filepath.Join(secretDir, it.Path), []byte(testURL+"\n"), 0o600))
		}
	}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil:
			require.Equal(t, "metadata.name", e.ValueFrom.FieldRef.FieldPath)
			env[e.Name] = "projectord-7d9f8b6c5d-x2x7q"
		case secretMount != "" && strings.HasPrefix(e.Value, secretMount+"/"):
			env[e.Name] = filepath.Join(secretDir, strings.TrimPrefix(e.Value, secretMount+"/"))
		default:
			env[e.Name] = e.Value
		}
	}
	return env
}

const testURL = "postgres://projectord:secret@db.example:5432/app"

// loadShippedConfig loads a configuration file under deploy/ with env as
// the only environment, as the daemon would, and requires it to be valid.
func loadShippedConfig(t *testing.T, path string, env map[string]string) *config.Config {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	cfg, err := config.LoadBytes(b, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	var verr *config.ValidationError
	if errors.As(err, &verr) {
		t.Fatalf("%s is invalid: %v", path, verr.Problems)
	}
	require.NoError(t, err, path)
	return cfg
}

func TestConfigMapAndSecretReachTheDaemon(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	c := k.container(t)
	require.Len(t, k.kust.ConfigMapGenerator, 1)
	gen := k.kust.ConfigMapGenerator[0]
	require.Equal(t, []string{"projectord.yaml"}, gen.Files)

	volumes := map[string]string{} // volume -> mount path
	for _, m := range c.VolumeMounts {
		require.True(t, m.ReadOnly, m.Name)
		volumes[m.Name] = m.MountPath
	}
	var sawConfig, sawSecret bool
	for _, v := range k.deploy.Spec.Template.Spec.Volumes {
		switch {
		case v.ConfigMap != nil:
			sawConfig = true
			require.Equal(t, gen.Name, v.ConfigMap.Name, "the volume uses the generated ConfigMap")
			require.Equal(t, c.Args[2], volumes[v.Name]+"/"+gen.Files[0], "--config names the mounted file")
		case v.Secret != nil:
			sawSecret = true
			require.Len(t, v.Secret.Items, 1)
			require.Equal(t, 0o440, v.Secret.DefaultMode, "readable by the container's group (fsGroup) only")
		}
	}
	require.True(t, sawConfig)
	require.True(t, sawSecret)

	cfg := loadShippedConfig(t, "kubernetes/projectord.yaml", k.env(t))
	require.Equal(t, testURL, cfg.Database.URL, "PROJECTORD_DATABASE_URL_FILE names the mounted secret")
	require.Equal(t, "projectord-7d9f8b6c5d-x2x7q", cfg.Coordination.NodeID, "the pod name is the node id")
	require.NotEmpty(t, cfg.Projectors)
}

func TestNetworkPolicy(t *testing.T) {
	t.Parallel()
	k := loadK8s(t)
	np := k.netpol.Spec
	require.ElementsMatch(t, []string{"Ingress", "Egress"}, np.PolicyTypes)
	require.Len(t, np.Ingress, 1)
	require.Equal(t, []networkPolicyPort{{Port: "metrics", Protocol: "TCP"}}, np.Ingress[0].Ports, "ingress only to the metrics port")
	// The endpoints are unauthenticated: only the scraper may connect, by
	// namespace AND pod labels (one peer with both selectors, not two peers).
	require.Len(t, np.Ingress[0].From, 1, "ingress only from the scraper")
	peer := np.Ingress[0].From[0]
	require.NotNil(t, peer.NamespaceSelector)
	require.NotNil(t, peer.PodSelector)
	require.Equal(t, map[string]string{"kubernetes.io/metadata.name": "monitoring"}, peer.NamespaceSelector.MatchLabels)
	require.Equal(t, map[string]string{"app.kubernetes.io/name": "prometheus"}, peer.PodSelector.MatchLabels)
	var egress []networkPolicyPort
	for _, e := range np.Egress {
		require.NotEmpty(t, e.Ports, "every egress rule is limited to ports")
		egress = append(egress, e.Ports...)
	}
	require.ElementsMatch(t, []networkPolicyPort{{"5432", "TCP"}, {"53", "UDP"}, {"53", "TCP"}}, egress)
}

// TestKustomizeBuild renders the base with kubectl's built-in kustomize
// when kubectl is installed (.ci/run does not install it).
func TestKustomizeBuild(t *testing.T) {
	t.Parallel()
	kubectl := requireTool(t, "kubectl", false)
	out := runTool(t, ".", kubectl, "kustomize", "kubernetes")
	dec := yaml.NewDecoder(strings.NewReader(out))
	kinds := map[string]int{}
	var configMap, mounted string
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata meta   `yaml:"metadata"`
			Spec     struct {
				Template struct {
					Spec podSpec `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		kinds[doc.Kind]++
		require.Equal(t, "projectord", doc.Metadata.Labels["app.kubernetes.io/part-of"], "%s %s", doc.Kind, doc.Metadata.Name)
		switch doc.Kind {
		case "ConfigMap":
			configMap = doc.Metadata.Name
		case "Deployment":
			for _, v := range doc.Spec.Template.Spec.Volumes {
				if v.ConfigMap != nil {
					mounted = v.ConfigMap.Name
				}
			}
		}
	}
	require.Equal(t, map[string]int{"ServiceAccount": 1, "ConfigMap": 1, "Service": 1, "Deployment": 1,
		"PodDisruptionBudget": 1, "NetworkPolicy": 1, "ServiceMonitor": 1, "PrometheusRule": 1}, kinds)
	require.True(t, strings.HasPrefix(configMap, "projectord-config-"), "a content-hashed name: %s", configMap)
	require.Equal(t, configMap, mounted, "the Deployment mounts the generated ConfigMap")
}
