package export

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/qwen-appliance/qwen-appliance/harden"
)

// kubeVersion is the cluster version charts are rendered for: image
// volumes need 1.33 or later, and helm template assumes 1.20 otherwise.
const kubeVersion = "1.35.0"

// renderChart exports the test bundle, lints the chart with helm lint
// --strict and renders it with helm template and the given flags.
func renderChart(t *testing.T, helm string, values string, args ...string) (*Result, []byte) {
	t.Helper()
	bundle, v := testBundle(t)
	o := testOptions(t, bundle, v)
	if values != "" {
		o.Values = []ValuesFile{{Name: "site.yaml", Data: []byte(values)}}
	}
	res, err := Helm(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runHelm(t, helm, "lint", "--strict", "--kube-version", kubeVersion, res.Chart); err != nil {
		t.Fatalf("helm lint --strict: %v\n%s", err, out)
	}
	out, err := runHelm(t, helm, append([]string{"template", "rel", res.Chart, "--namespace", "llm", "--kube-version", kubeVersion}, args...)...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	return res, []byte(out)
}

func TestChartRendersStrictAndRestricted(t *testing.T) {
	helm := helmPath(t)
	secrets := t.TempDir()
	for name, content := range map[string]string{"tokens.json": `{"tokens":[]}`, "tls.crt": "CERT", "tls.key": "KEY", "audit.key": "AUDITKEY"} {
		if err := os.WriteFile(filepath.Join(secrets, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name   string
		values string
		args   []string
	}{
		{"defaults", "", nil},
		{"secrets, monitor, clients and four GPUs", "gateway:\n  clientCIDRs: [10.20.0.0/16, 192.0.2.7/32]\nmonitoring:\n  serviceMonitor: true\nruntime:\n  tensorParallel: 4\n", []string{
			"--set", "secrets.create=true", "--set", "secrets.auditKey.enabled=true",
			"--set-file", "secrets.tokens.content=" + filepath.Join(secrets, "tokens.json"),
			"--set-file", "secrets.tls.cert=" + filepath.Join(secrets, "tls.crt"),
			"--set-file", "secrets.tls.key=" + filepath.Join(secrets, "tls.key"),
			"--set-file", "secrets.auditKey.content=" + filepath.Join(secrets, "audit.key"),
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, stream := renderChart(t, helm, c.values, c.args...)
			objs, err := decodeStrict(stream)
			if err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			if len(objs.deployments) != 1 {
				t.Fatalf("%d deployments", len(objs.deployments))
			}
			d := objs.deployments[0]
			if v, err := restrictedViolations(&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec); err != nil || len(v) > 0 {
				t.Fatalf("pod is not restricted: %v %v", v, err)
			}
			checkPod(t, res, &d.Spec.Template.Spec)
			for _, p := range policyProblems(objs.networkPolicies, c.values != "") {
				t.Error(p)
			}
			if c.args != nil && len(objs.secrets) != 3 {
				t.Errorf("%d secrets rendered, want tokens, TLS and audit key", len(objs.secrets))
			}
			if c.args == nil && len(objs.secrets) != 0 {
				t.Errorf("secrets rendered without secrets.create")
			}
		})
	}
}

// checkPod checks what the chart promises about the pod beyond "restricted".
func checkPod(t *testing.T, res *Result, spec *corev1.PodSpec) {
	t.Helper()
	images := map[string]string{}
	for _, im := range res.Images {
		images[im.Role] = im.Pinned()
	}
	if len(spec.InitContainers) != 2 || spec.InitContainers[0].Image != images["gateway"] ||
		!slices.Equal(spec.InitContainers[0].Args[:3], []string{"manifest", "verify", "/bundle"}) {
		t.Fatalf("the first init container does not verify the bundle with the gateway image: %+v", spec.InitContainers)
	}
	if stage := spec.InitContainers[1]; stage.Name != "stage-secrets" || stage.Args[0] != "stage-secrets" {
		t.Errorf("second init container %+v", stage)
	}
	// Only the staging init container sees the Secrets; the gateway reads
	// its 0600 copies, and no other container sees either.
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		for _, m := range c.VolumeMounts {
			switch {
			case (m.Name == "tokens" || m.Name == "tls" || m.Name == "audit-key") && c.Name != "stage-secrets",
				m.Name == "run" && c.Name != "stage-secrets" && c.Name != "gateway",
				m.Name == "run" && c.Name == "gateway" && !m.ReadOnly:
				t.Errorf("%s mounts %s (read-only %v)", c.Name, m.Name, m.ReadOnly)
			}
		}
	}
	var bundleVol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == "bundle" {
			bundleVol = &spec.Volumes[i]
		}
	}
	if bundleVol == nil || bundleVol.Image == nil || bundleVol.Image.Reference != images["model"] {
		t.Fatalf("the bundle volume is not the model image by digest: %+v", bundleVol)
	}
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if m.Name == "bundle" && !m.ReadOnly {
				t.Errorf("%s mounts the bundle writable", c.Name)
			}
		}
	}
	if *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted")
	}
	for _, c := range spec.Containers {
		switch c.Name {
		case "runtime":
			if c.Image != runtimeImage {
				t.Errorf("runtime image %s", c.Image)
			}
			args := strings.Join(c.Args, " ")
			if !strings.Contains(args, "--host 127.0.0.1") || !strings.Contains(args, "--model /bundle/model/weights.gguf") {
				t.Errorf("vLLM args %s", args)
			}
			tp := c.Resources.Limits["nvidia.com/gpu"]
			i := slices.Index(c.Args, "--tensor-parallel-size")
			if i < 0 || c.Args[i+1] != tp.String() {
				t.Errorf("--tensor-parallel-size and the GPU limit %s differ: %v", tp.String(), c.Args)
			}
			if len(c.Ports) != 0 {
				t.Error("the runtime declares a port on the pod network")
			}
		case "gateway":
			args := strings.Join(c.Args, " ")
			if c.Image != images["gateway"] || !strings.HasPrefix(args, "serve --upstream http://127.0.0.1:8000 ") || !strings.Contains(args, "--tokens /run/qwen-appliance/tokens.json") || !strings.Contains(args, "--tls-cert /run/qwen-appliance/tls.crt") {
				t.Errorf("gateway %s %s", c.Image, args)
			}
		default:
			t.Errorf("unexpected container %s", c.Name)
		}
	}
}

// policyProblems checks the mirror of the nftables policy: a default deny
// for the namespace, and for the appliance's pods ingress only to the API
// port (from the client CIDRs) and the metrics port (from the monitoring
// namespace), and no egress. It returns what is wrong.
func policyProblems(nps []*networkingv1.NetworkPolicy, withClients bool) []string {
	var p []string
	if len(nps) != 2 {
		return []string{fmt.Sprintf("%d network policies, want a namespace default deny and the appliance's", len(nps))}
	}
	deny, app := nps[0], nps[1]
	if len(deny.Spec.PodSelector.MatchLabels) != 0 || len(deny.Spec.Ingress) != 0 || len(deny.Spec.Egress) != 0 || len(deny.Spec.PolicyTypes) != 2 {
		p = append(p, fmt.Sprintf("default deny %+v", deny.Spec))
	}
	if len(app.Spec.PolicyTypes) != 2 || len(app.Spec.Egress) != 0 {
		p = append(p, fmt.Sprintf("appliance policy allows egress or lacks a policy type: %+v", app.Spec))
	}
	wantRules := 1
	if withClients {
		wantRules = 2
	}
	if len(app.Spec.Ingress) != wantRules {
		p = append(p, fmt.Sprintf("%d ingress rules, want %d", len(app.Spec.Ingress), wantRules))
	}
	for _, r := range app.Spec.Ingress {
		if len(r.Ports) != 1 || len(r.From) == 0 {
			p = append(p, fmt.Sprintf("ingress rule %+v is not one port from named peers", r))
			continue
		}
		switch r.Ports[0].Port.IntValue() {
		case harden.DefaultAPIPort: // the port the host firewall opens to clients
			for _, peer := range r.From {
				if peer.IPBlock == nil || peer.NamespaceSelector != nil || peer.PodSelector != nil {
					p = append(p, fmt.Sprintf("API peer %+v is not a CIDR", peer))
				}
			}
		case 9464:
			if r.From[0].NamespaceSelector == nil || r.From[0].IPBlock != nil {
				p = append(p, fmt.Sprintf("metrics peer %+v is not the monitoring namespace", r.From[0]))
			}
		default:
			p = append(p, fmt.Sprintf("ingress to port %v", r.Ports[0].Port))
		}
	}
	return p
}

// The helpers themselves refuse what they must: a privileged pod, a field
// the API does not have, an unknown kind, a policy that allows egress.
func TestCheckersRefuseBadObjects(t *testing.T) {
	helm := helmPath(t)
	_, stream := renderChart(t, helm, "")
	objs, err := decodeStrict(stream)
	if err != nil {
		t.Fatal(err)
	}
	d := objs.deployments[0]
	for name, edit := range map[string]func(s *corev1.PodSpec){
		"a privileged container": func(s *corev1.PodSpec) { t := true; s.Containers[0].SecurityContext.Privileged = &t },
		"a container run as root": func(s *corev1.PodSpec) {
			root := int64(0)
			s.Containers[1].SecurityContext.RunAsUser = &root
		},
		"an added capability": func(s *corev1.PodSpec) {
			s.Containers[0].SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		},
		"a hostPath volume": func(s *corev1.PodSpec) {
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}})
		},
		"no seccomp profile": func(s *corev1.PodSpec) {
			s.SecurityContext.SeccompProfile = nil
			s.InitContainers[0].SecurityContext.SeccompProfile = nil
		},
		"the host network": func(s *corev1.PodSpec) { s.HostNetwork = true },
	} {
		spec := d.Spec.Template.Spec.DeepCopy()
		edit(spec)
		if v, err := restrictedViolations(&d.Spec.Template.ObjectMeta, spec); err != nil || len(v) == 0 {
			t.Errorf("%s passed Pod Security restricted (%v)", name, err)
		}
	}
	for name, doc := range map[string]string{
		"a misspelt field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  prots: []\n",
		"an unknown kind":  "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
		"a duplicate key":  "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b, a: c}\n",
	} {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s decoded", name)
		}
	}
	// A policy that lets the pods connect anywhere is caught.
	leaky := objs.networkPolicies[1].DeepCopy()
	leaky.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
	port := intstr.FromInt32(22)
	leaky.Spec.Ingress = append(leaky.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: &port}}})
	if p := policyProblems([]*networkingv1.NetworkPolicy{objs.networkPolicies[0], leaky}, false); len(p) < 2 {
		t.Errorf("a policy with egress and an open SSH port passed: %v", p)
	}
}

// helm lint --strict refuses a chart whose values break its schema.
func TestHelmLintRefusesBadValues(t *testing.T) {
	helm := helmPath(t)
	bundle, v := testBundle(t)
	res, err := Helm(context.Background(), testOptions(t, bundle, v))
	if err != nil {
		t.Fatal(err)
	}
	// helm template refuses clusters without image volumes.
	if out, err := runHelm(t, helm, "template", "rel", res.Chart, "--kube-version", "1.30.0"); err == nil || !strings.Contains(out, "kubeVersion") {
		t.Fatalf("helm template for 1.30 passed: %v\n%s", err, out)
	}
	p := filepath.Join(res.Chart, "values.yaml")
	data, _ := os.ReadFile(p)
	data = []byte(strings.Replace(string(data), "tensorParallel: 1", "tensorParallel: 0", 1))
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runHelm(t, helm, "lint", "--strict", "--kube-version", kubeVersion, res.Chart); err == nil {
		t.Fatalf("helm lint --strict passed a chart with tensorParallel 0:\n%s", out)
	}
}

// helmPath finds the helm binary scripts/build-helm.sh builds: $QWA_HELM,
// the cache, or PATH. Without it the test skips, except in CI.
func helmPath(t *testing.T) string {
	t.Helper()
	cands := []string{os.Getenv("QWA_HELM")}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, ".cache", "qwen-appliance", "helm-v3.22.0", "bin", "helm"))
	}
	if p, err := exec.LookPath("helm"); err == nil {
		cands = append(cands, p)
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return c
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("helm not found under CI: run scripts/build-helm.sh and set QWA_HELM")
	}
	t.Skip("helm not found: run scripts/build-helm.sh (about 4 minutes) or set QWA_HELM")
	return ""
}

func runHelm(t *testing.T, helm string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}
