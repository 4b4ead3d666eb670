// Package deploy holds no code: its tests parse the deployment files beside
// them (the Kubernetes manifests under k8s/, docker-compose.yml and the
// Dockerfile) and check the properties the cluster relies on, so a typo or
// a drifted name fails `go test` instead of a rollout. They need no Docker
// engine or Kubernetes API; scripts/e2e-docker.sh runs the real thing.
package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The image's runtime user (Dockerfile USER), which owns /data.
const (
	imageUser = "65532:65532"
	uid       = 65532
	grpcPort  = 7001
	httpPort  = 9100
)

// Only the fields these tests check are modelled; yaml.v3 ignores the rest.
type manifest struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec      yaml.Node `yaml:"spec"`
	Resources []string  `yaml:"resources"` // Kustomization
}

type selector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type servicePort struct {
	Name       string `yaml:"name"`
	Port       int    `yaml:"port"`
	TargetPort string `yaml:"targetPort"`
}

type serviceSpec struct {
	ClusterIP                string            `yaml:"clusterIP"`
	PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
	Selector                 map[string]string `yaml:"selector"`
	Ports                    []servicePort     `yaml:"ports"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type envVar struct {
	Name      string `yaml:"name"`
	ValueFrom struct {
		FieldRef struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []envVar `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type statefulSetSpec struct {
	ServiceName         string   `yaml:"serviceName"`
	Replicas            int      `yaml:"replicas"`
	PodManagementPolicy string   `yaml:"podManagementPolicy"`
	Selector            selector `yaml:"selector"`
	Template            struct {
		Metadata struct {
			Labels map[string]string `yaml:"labels"`
		} `yaml:"metadata"`
		Spec struct {
			SecurityContext struct {
				RunAsUser int `yaml:"runAsUser"`
				FSGroup   int `yaml:"fsGroup"`
			} `yaml:"securityContext"`
			Containers []container `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
	VolumeClaimTemplates []struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
		Spec struct {
			AccessModes []string `yaml:"accessModes"`
			Resources   struct {
				Requests map[string]string `yaml:"requests"`
			} `yaml:"resources"`
		} `yaml:"spec"`
	} `yaml:"volumeClaimTemplates"`
}

type pdbSpec struct {
	// An IntOrString: 1 and "1" differ to Kubernetes ("1" is invalid; a
	// percentage needs the "%"), so the node's tag is checked too.
	MaxUnavailable yaml.Node `yaml:"maxUnavailable"`
	MinAvailable   *string   `yaml:"minAvailable"`
	Selector       selector  `yaml:"selector"`
}

// decodeAll decodes every document of a multi-document YAML stream.
func decodeAll[T any](r io.Reader) ([]T, error) {
	dec := yaml.NewDecoder(r)
	var out []T
	for i := 0; ; i++ {
		var v T
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, v)
	}
}

// k8sManifests parses every manifest under k8s/, by file name.
func k8sManifests(t *testing.T) map[string][]manifest {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no manifests under k8s/")
	}
	out := map[string][]manifest{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs, err := decodeAll[manifest](bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = docs
	}
	return out
}

// byKind indexes the Kubernetes objects (not the Kustomization) by kind and
// name, failing on a document without apiVersion, kind or name.
func byKind(t *testing.T, files map[string][]manifest) map[string]map[string]manifest {
	t.Helper()
	out := map[string]map[string]manifest{}
	for f, docs := range files {
		for i, m := range docs {
			if m.Kind == "Kustomization" {
				continue
			}
			if m.APIVersion == "" || m.Kind == "" || m.Metadata.Name == "" {
				t.Errorf("%s document %d: apiVersion %q, kind %q, metadata.name %q: all are required", f, i, m.APIVersion, m.Kind, m.Metadata.Name)
				continue
			}
			if out[m.Kind] == nil {
				out[m.Kind] = map[string]manifest{}
			}
			if _, dup := out[m.Kind][m.Metadata.Name]; dup {
				t.Errorf("%s: %s %q defined twice", f, m.Kind, m.Metadata.Name)
			}
			out[m.Kind][m.Metadata.Name] = m
		}
	}
	return out
}

func decodeSpec[T any](t *testing.T, m manifest) T {
	t.Helper()
	var spec T
	if err := m.Spec.Decode(&spec); err != nil {
		t.Fatalf("%s %s: spec: %v", m.Kind, m.Metadata.Name, err)
	}
	return spec
}

// selects reports whether every label of sel is on labels (an empty
// selector selects nothing here: ours must name the app).
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestK8sManifests(t *testing.T) {
	files := k8sManifests(t)
	objs := byKind(t, files)

	wantKinds := map[string]int{"StatefulSet": 1, "Service": 2, "PodDisruptionBudget": 1}
	for kind, n := range wantKinds {
		if len(objs[kind]) != n {
			t.Errorf("%d %s objects, want %d", len(objs[kind]), kind, n)
		}
	}
	for kind := range objs {
		if _, ok := wantKinds[kind]; !ok {
			t.Errorf("unexpected kind %s: add its checks here", kind)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	var sts manifest
	for _, m := range objs["StatefulSet"] {
		sts = m
	}
	spec := decodeSpec[statefulSetSpec](t, sts)
	podLabels := spec.Template.Metadata.Labels

	var headless, client string
	for name, m := range objs["Service"] {
		svc := decodeSpec[serviceSpec](t, m)
		if !selects(svc.Selector, podLabels) {
			t.Errorf("Service %s: selector %v does not select the pods (labels %v)", name, svc.Selector, podLabels)
		}
		if !slices.ContainsFunc(svc.Ports, func(p servicePort) bool { return p.Port == grpcPort && p.TargetPort == "grpc" }) {
			t.Errorf("Service %s: no port %d to targetPort grpc: %+v", name, grpcPort, svc.Ports)
		}
		if svc.ClusterIP == "None" {
			headless = name
			if !svc.PublishNotReadyAddresses {
				t.Errorf("headless Service %s: publishNotReadyAddresses must be true: peers must resolve each other before they are ready", name)
			}
		} else {
			client = name
		}
	}
	if headless == "" || client == "" {
		t.Fatalf("want one headless (clusterIP: None) and one client Service, got headless %q client %q", headless, client)
	}

	t.Run("StatefulSet", func(t *testing.T) {
		if spec.Replicas != 3 {
			t.Errorf("replicas %d, want 3", spec.Replicas)
		}
		if spec.ServiceName != headless {
			t.Errorf("serviceName %q, want the headless Service %q", spec.ServiceName, headless)
		}
		if spec.PodManagementPolicy != "Parallel" {
			t.Errorf("podManagementPolicy %q, want Parallel (no pod is ready before a majority runs)", spec.PodManagementPolicy)
		}
		if !selects(spec.Selector.MatchLabels, podLabels) {
			t.Errorf("selector %v does not match the template labels %v", spec.Selector.MatchLabels, podLabels)
		}
		sc := spec.Template.Spec.SecurityContext
		if sc.RunAsUser != uid || sc.FSGroup != uid {
			t.Errorf("securityContext runAsUser %d fsGroup %d, want %d (the image's user, owner of /data)", sc.RunAsUser, sc.FSGroup, uid)
		}
		if len(spec.VolumeClaimTemplates) != 1 {
			t.Fatalf("%d volumeClaimTemplates, want 1", len(spec.VolumeClaimTemplates))
		}
		pvc := spec.VolumeClaimTemplates[0]
		if !slices.Equal(pvc.Spec.AccessModes, []string{"ReadWriteOnce"}) || pvc.Spec.Resources.Requests["storage"] == "" {
			t.Errorf("volumeClaimTemplate %s: accessModes %v, storage %q: want [ReadWriteOnce] and a size", pvc.Metadata.Name, pvc.Spec.AccessModes, pvc.Spec.Resources.Requests["storage"])
		}
		if len(spec.Template.Spec.Containers) != 1 {
			t.Fatalf("%d containers, want 1", len(spec.Template.Spec.Containers))
		}
		checkNode(t, spec.Template.Spec.Containers[0], sts.Metadata.Name, headless, spec.Replicas, pvc.Metadata.Name)
	})

	t.Run("PodDisruptionBudget", func(t *testing.T) {
		for name, m := range objs["PodDisruptionBudget"] {
			pdb := decodeSpec[pdbSpec](t, m)
			if mu := pdb.MaxUnavailable; mu.Tag != "!!int" || mu.Value != "1" {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %q (%s), want the integer 1", name, mu.Value, mu.Tag)
			}
			if pdb.MinAvailable != nil {
				t.Errorf("PodDisruptionBudget %s: sets minAvailable too; Kubernetes allows one of the two", name)
			}
			if !selects(pdb.Selector.MatchLabels, podLabels) {
				t.Errorf("PodDisruptionBudget %s: selector %v does not select the pods", name, pdb.Selector.MatchLabels)
			}
		}
	})

	t.Run("Kustomization", func(t *testing.T) {
		var listed []string
		for _, m := range files["kustomization.yaml"] {
			listed = append(listed, m.Resources...)
		}
		var want []string
		for f := range files {
			if f != "kustomization.yaml" {
				want = append(want, f)
			}
		}
		slices.Sort(listed)
		slices.Sort(want)
		if !slices.Equal(listed, want) {
			t.Errorf("kustomization.yaml resources %v, want every manifest %v", listed, want)
		}
	})
}

// checkNode checks the kvnode container of StatefulSet sts: its --id is the
// pod name, its --peers names every pod at its stable DNS name under the
// headless Service, its data is on the claim, and its probes hit the HTTP
// port.
func checkNode(t *testing.T, c container, sts, headless string, replicas int, claim string) {
	t.Helper()
	flags := map[string]string{}
	for _, a := range c.Args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(k, "--") {
			t.Errorf("arg %q: want --flag=value, so each flag is one list item", a)
			continue
		}
		flags[k] = v
	}
	var peers []string
	for i := range replicas {
		pod := fmt.Sprintf("%s-%d", sts, i)
		peers = append(peers, fmt.Sprintf("%s=%s.%s:%d", pod, pod, headless, grpcPort))
	}
	checkFlags(t, flags, "$(POD_NAME)", peers)
	if !slices.ContainsFunc(c.Env, func(e envVar) bool {
		return e.Name == "POD_NAME" && e.ValueFrom.FieldRef.FieldPath == "metadata.name"
	}) {
		t.Errorf("env: no POD_NAME from fieldRef metadata.name: %+v", c.Env)
	}
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != grpcPort || ports["metrics"] != httpPort {
		t.Errorf("container ports %v, want grpc %d and metrics %d", ports, grpcPort, httpPort)
	}
	for _, p := range []struct {
		name, path string
		probe      *probe
	}{
		{"readinessProbe", "/readyz", c.ReadinessProbe},
		{"livenessProbe", "/healthz", c.LivenessProbe},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: missing, want httpGet %s on port metrics", p.name, p.path)
			continue
		}
		if g := p.probe.HTTPGet; g.Path != p.path || g.Port != "metrics" {
			t.Errorf("%s: httpGet %s on port %q, want %s on port metrics", p.name, g.Path, g.Port, p.path)
		}
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || m.Name == claim && m.MountPath == "/data"
	}
	if !mounted {
		t.Errorf("volumeMounts %+v: want claim %q at /data", c.VolumeMounts, claim)
	}
}

// checkFlags checks the kvnode flags every deployment sets the same way:
// gRPC and HTTP on every interface, data on the volume at /data, and the
// same initial cluster on each node.
func checkFlags(t *testing.T, flags map[string]string, id string, peers []string) {
	t.Helper()
	want := map[string]string{
		"--id":           id,
		"--listen":       fmt.Sprintf("0.0.0.0:%d", grpcPort),
		"--metrics-addr": fmt.Sprintf("0.0.0.0:%d", httpPort),
		"--data-dir":     "/data",
		"--peers":        strings.Join(peers, ","),
	}
	for k, v := range want {
		if flags[k] != v {
			t.Errorf("%s %q, want %q", k, flags[k], v)
		}
	}
}

type composeFile struct {
	Services map[string]struct {
		Image       string   `yaml:"image"`
		Command     []string `yaml:"command"`
		Restart     string   `yaml:"restart"`
		Networks    []string `yaml:"networks"`
		Volumes     []string `yaml:"volumes"`
		Ports       []string `yaml:"ports"`
		Profiles    []string `yaml:"profiles"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
	Networks map[string]any `yaml:"networks"`
	Volumes  map[string]any `yaml:"volumes"`
}

func TestCompose(t *testing.T) {
	b, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(b, &cf); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	nodes := []string{"n1", "n2", "n3"}
	var peers []string
	for _, n := range nodes {
		peers = append(peers, fmt.Sprintf("%s=%s:%d", n, n, grpcPort))
	}
	for _, n := range nodes {
		t.Run(n, func(t *testing.T) {
			s, ok := cf.Services[n]
			if !ok {
				t.Fatalf("no service %s", n)
			}
			if !strings.Contains(s.Image, "ringkv:") {
				t.Errorf("image %q, want the ringkv image", s.Image)
			}
			if s.Restart != "unless-stopped" {
				t.Errorf("restart %q, want unless-stopped", s.Restart)
			}
			if len(s.Profiles) != 0 {
				t.Errorf("profiles %v: the nodes belong to the default profile", s.Profiles)
			}
			flags := map[string]string{}
			for i := 0; i+1 < len(s.Command); i += 2 {
				flags[s.Command[i]] = s.Command[i+1]
			}
			checkFlags(t, flags, n, peers)
			vol := n + "-data"
			if !slices.Contains(s.Volumes, vol+":/data") {
				t.Errorf("volumes %v, want %s:/data", s.Volumes, vol)
			}
			if _, ok := cf.Volumes[vol]; !ok {
				t.Errorf("named volume %s is not declared", vol)
			}
			if !slices.Contains(s.Networks, "ringkv") {
				t.Errorf("networks %v, want ringkv", s.Networks)
			}
			for _, net := range s.Networks {
				if _, ok := cf.Networks[net]; !ok {
					t.Errorf("network %s is not declared", net)
				}
			}
			if hc := s.Healthcheck; hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/kvctl", "--addr", fmt.Sprintf("127.0.0.1:%d", grpcPort), "--timeout", "2s", "health"}) {
				t.Errorf("healthcheck %+v, want CMD /kvctl ... health against the node itself", hc)
			}
			published := n == "n1"
			if published {
				if len(s.Ports) != 1 || !strings.HasPrefix(s.Ports[0], "127.0.0.1:") || !strings.HasSuffix(s.Ports[0], fmt.Sprintf(":%d", grpcPort)) {
					t.Errorf("ports %v, want only 127.0.0.1:PORT:%d", s.Ports, grpcPort)
				}
			} else if len(s.Ports) != 0 {
				t.Errorf("ports %v, want none", s.Ports)
			}
		})
	}
	t.Run("observability profile", func(t *testing.T) {
		for _, name := range []string{"prometheus", "grafana"} {
			s, ok := cf.Services[name]
			if !ok {
				t.Errorf("no service %s", name)
				continue
			}
			if !slices.Equal(s.Profiles, []string{"observability"}) {
				t.Errorf("%s: profiles %v, want [observability]: the default profile must pull nothing", name, s.Profiles)
			}
			for _, v := range s.Volumes {
				src, _, _ := strings.Cut(v, ":")
				if !strings.HasPrefix(src, "./") {
					continue
				}
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			}
			for _, p := range s.Ports {
				if !strings.HasPrefix(p, "127.0.0.1:") {
					t.Errorf("%s publishes %q beyond the host's loopback", name, p)
				}
			}
		}
		for name, s := range cf.Services {
			if len(s.Profiles) == 0 && !strings.Contains(s.Image, "ringkv:") {
				t.Errorf("service %s (image %q) is in the default profile: it needs a registry", name, s.Image)
			}
		}
	})
}

// TestDockerfile checks what a scratch image must get right, since nothing
// can be fixed at run time without a shell.
func TestDockerfile(t *testing.T) {
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	instr := map[string][]string{}
	var cont strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if l, ok := strings.CutSuffix(line, `\`); ok {
			cont.WriteString(l + " ")
			continue
		}
		cont.WriteString(line)
		op, args, _ := strings.Cut(cont.String(), " ")
		instr[strings.ToUpper(op)] = append(instr[strings.ToUpper(op)], strings.Join(strings.Fields(args), " "))
		cont.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		op   string
		want []string // every instruction of op, in order
	}{
		{"FROM", []string{"scratch"}},
		{"USER", []string{imageUser}},
		{"EXPOSE", []string{fmt.Sprintf("%d %d", grpcPort, httpPort)}},
		{"VOLUME", []string{`["/data"]`}},
		{"ENTRYPOINT", []string{`["/kvnode"]`}},
	}
	for _, tc := range tests {
		if got := instr[tc.op]; !slices.Equal(got, tc.want) {
			t.Errorf("%s %q, want %q", tc.op, got, tc.want)
		}
	}
	if !slices.Contains(instr["COPY"], "--chown="+imageUser+" data /data") {
		t.Errorf("COPY %q: want /data copied owned by %s", instr["COPY"], imageUser)
	}
	hc := instr["HEALTHCHECK"]
	if len(hc) != 1 || !strings.HasSuffix(hc[0], fmt.Sprintf(`CMD ["/kvctl", "--addr", "127.0.0.1:%d", "--timeout", "2s", "health"]`, grpcPort)) {
		t.Errorf("HEALTHCHECK %q, want CMD [\"/kvctl\", ... \"health\"]", hc)
	}
}
