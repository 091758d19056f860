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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
		{"secrets, monitor, clients, replicas and four GPUs", "gateway:\n  clientCIDRs: [10.20.0.0/16, 192.0.2.7/32]\n  replicas: 2\nmonitoring:\n  serviceMonitor: true\nruntime:\n  tensorParallel: 4\n  replicas: 3\n", []string{
			"--set", "secrets.create=true", "--set", "secrets.auditKey.enabled=true",
			"--set-file", "secrets.tokens.content=" + filepath.Join(secrets, "tokens.json"),
			"--set-file", "secrets.tls.cert=" + filepath.Join(secrets, "tls.crt"),
			"--set-file", "secrets.tls.key=" + filepath.Join(secrets, "tls.key"),
			"--set-file", "secrets.auditKey.content=" + filepath.Join(secrets, "audit.key"),
		}},
		{"a pinned runtime address (IPv6)", "runtime:\n  serviceClusterIP: \"fd00:10:96::a\"\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, stream := renderChart(t, helm, c.values, c.args...)
			objs, err := decodeStrict(stream)
			if err != nil {
				t.Fatalf("strict decode: %v", err)
			}
			for _, p := range chartProblems(res, objs, c.values != "" && strings.Contains(c.values, "clientCIDRs")) {
				t.Error(p)
			}
			gw, rt := deployment(objs, "gateway"), deployment(objs, "runtime")
			if c.args != nil {
				if *gw.Spec.Replicas != 2 || *rt.Spec.Replicas != 3 {
					t.Errorf("replicas: gateway %d, runtime %d", *gw.Spec.Replicas, *rt.Spec.Replicas)
				}
				if len(objs.secrets) != 3 {
					t.Errorf("%d secrets rendered, want tokens, TLS and audit key", len(objs.secrets))
				}
			}
			if c.args == nil && len(objs.secrets) != 0 {
				t.Errorf("secrets rendered without secrets.create")
			}
			if strings.Contains(c.values, "fd00") {
				env := envOf(gw.Spec.Template.Spec.Containers[0])
				if env["RUNTIME_HOST"] != "[fd00:10:96::a]" || *gw.Spec.Template.Spec.EnableServiceLinks {
					t.Errorf("pinned runtime address: RUNTIME_HOST %q, service links %v", env["RUNTIME_HOST"], *gw.Spec.Template.Spec.EnableServiceLinks)
				}
			}
		})
	}
}

// deployment returns the Deployment of a component (gateway, runtime), or nil.
func deployment(objs *objects, component string) *appsv1.Deployment {
	for _, d := range objs.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			return d
		}
	}
	return nil
}

// chartProblems checks everything the chart promises about a rendered
// release and returns what is wrong: two Deployments whose pods pass Pod
// Security "restricted", the runtime (runtimeProblems), the gateway
// (gatewayProblems), the Services and the NetworkPolicies (policyProblems).
func chartProblems(res *Result, objs *objects, withClients bool) []string {
	gw, rt := deployment(objs, "gateway"), deployment(objs, "runtime")
	if len(objs.deployments) != 2 || gw == nil || rt == nil {
		return []string{fmt.Sprintf("%d deployments, want a gateway and a runtime", len(objs.deployments))}
	}
	var p []string
	for _, d := range []*appsv1.Deployment{gw, rt} {
		if v, err := restrictedViolations(&d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec); err != nil || len(v) > 0 {
			p = append(p, fmt.Sprintf("%s pod is not restricted: %v %v", d.Name, v, err))
		}
		if sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			p = append(p, fmt.Sprintf("%s selects other pods than its own: %v", d.Name, err))
		}
	}
	p = append(p, runtimeProblems(res, rt)...)
	p = append(p, gatewayProblems(res, gw, rt, objs.services)...)
	p = append(p, serviceProblems(objs.services, gw, rt)...)
	p = append(p, policyProblems(objs.networkPolicies, gw, rt, withClients)...)
	return p
}

// argValue returns the word after flag in args.
func argValue(args []string, flag string) (string, bool) {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return "", false
	}
	return args[i+1], true
}

func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// mountedFrom reports which volume of spec holds path in container c.
func mountedFrom(spec *corev1.PodSpec, c corev1.Container, path string) *corev1.Volume {
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			for i := range spec.Volumes {
				if spec.Volumes[i].Name == m.Name {
					return &spec.Volumes[i]
				}
			}
		}
	}
	return nil
}

// runtimeProblems checks the vLLM pods: the bundle verified from the model
// image by digest and mounted read-only; vLLM by digest with its GPUs and
// tensor-parallel degree agreeing; mutual TLS required (--ssl-cert-reqs 2)
// with certificate, key and CA from the runtime's Secret; no other Secret.
func runtimeProblems(res *Result, d *appsv1.Deployment) []string {
	var p []string
	spec := &d.Spec.Template.Spec
	images := pinnedImages(res)
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Image != images["gateway"] ||
		!slices.Equal(spec.InitContainers[0].Args[:3], []string{"manifest", "verify", "/bundle"}) {
		p = append(p, fmt.Sprintf("the runtime's init container does not verify the bundle with the gateway image: %+v", spec.InitContainers))
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Name != "runtime" {
		return append(p, fmt.Sprintf("runtime pod containers %d", len(spec.Containers)))
	}
	c := spec.Containers[0]
	if c.Image != runtimeImage {
		p = append(p, "runtime image "+c.Image)
	}
	if m, _ := argValue(c.Args, "--model"); m != "/bundle/model/weights.gguf" {
		p = append(p, "vLLM --model "+m)
	}
	tp := c.Resources.Limits["nvidia.com/gpu"]
	if v, _ := argValue(c.Args, "--tensor-parallel-size"); v != tp.String() || tp.IsZero() {
		p = append(p, fmt.Sprintf("--tensor-parallel-size %q and the GPU limit %s differ", v, tp.String()))
	}
	if v, ok := argValue(c.Args, "--ssl-cert-reqs"); !ok || v != "2" {
		p = append(p, fmt.Sprintf("vLLM does not require client certificates: --ssl-cert-reqs %q", v))
	}
	for _, f := range []string{"--ssl-certfile", "--ssl-keyfile", "--ssl-ca-certs"} {
		v, ok := argValue(c.Args, f)
		vol := mountedFrom(spec, c, v)
		if !ok || vol == nil || vol.Secret == nil || vol.Secret.SecretName != "rel-qwen-appliance-runtime-tls" {
			p = append(p, fmt.Sprintf("vLLM %s %q is not from the runtime's TLS Secret", f, v))
		}
	}
	for _, pr := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		if pr == nil || pr.Exec == nil || !strings.Contains(strings.Join(pr.Exec.Command, " "), "https://127.0.0.1:8000/health") {
			p = append(p, fmt.Sprintf("runtime probe %+v does not ask /health over TLS from inside the pod", pr))
		}
	}
	var bundle *corev1.Volume
	for i, v := range spec.Volumes {
		if v.Name == "bundle" {
			bundle = &spec.Volumes[i]
		}
		if v.Secret != nil && v.Name != "runtime-tls" {
			p = append(p, "the runtime pod mounts Secret "+v.Secret.SecretName)
		}
	}
	if bundle == nil || bundle.Image == nil || bundle.Image.Reference != images["model"] {
		p = append(p, fmt.Sprintf("the bundle volume is not the model image by digest: %+v", bundle))
	}
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if (m.Name == "bundle" || m.Name == "runtime-tls") && !m.ReadOnly {
				p = append(p, c.Name+" mounts "+m.Name+" writable")
			}
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		p = append(p, "the runtime mounts the service account token")
	}
	return p
}

// gatewayProblems checks the gateway pods: serve from the gateway image,
// forwarding to the runtime Service over https:// with mutual TLS (CA,
// client certificate and key staged from the upstream Secret, the server
// name the runtime Service's), the runtime's address from service links;
// Secrets seen only by the staging init container; no GPU, no bundle.
func gatewayProblems(res *Result, gw, rt *appsv1.Deployment, services []*corev1.Service) []string {
	var p []string
	spec := &gw.Spec.Template.Spec
	images := pinnedImages(res)
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "stage-secrets" || spec.InitContainers[0].Args[0] != "stage-secrets" {
		p = append(p, fmt.Sprintf("gateway init containers %+v", spec.InitContainers))
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Name != "gateway" {
		return append(p, fmt.Sprintf("gateway pod containers %d", len(spec.Containers)))
	}
	c := spec.Containers[0]
	args := strings.Join(c.Args, " ")
	if c.Image != images["gateway"] || c.Args[0] != "serve" || !strings.Contains(args, "--tokens /run/qwen-appliance/tokens.json") || !strings.Contains(args, "--tls-cert /run/qwen-appliance/tls.crt") {
		p = append(p, fmt.Sprintf("gateway %s %s", c.Image, args))
	}
	up, _ := argValue(c.Args, "--upstream")
	if up != "https://$(RUNTIME_HOST):8000" {
		p = append(p, "gateway --upstream "+up+", want https:// to the runtime Service")
	}
	env := envOf(c)
	var runtimeSvc *corev1.Service
	for _, s := range services {
		if s.Spec.Selector["app.kubernetes.io/component"] == "runtime" {
			runtimeSvc = s
		}
	}
	if runtimeSvc == nil {
		return append(p, "no runtime Service")
	}
	wantHost := "$(" + strings.ToUpper(strings.ReplaceAll(runtimeSvc.Name, "-", "_")) + "_SERVICE_HOST)"
	if runtimeSvc.Spec.ClusterIP == "" && (env["RUNTIME_HOST"] != wantHost || spec.EnableServiceLinks == nil || !*spec.EnableServiceLinks) {
		p = append(p, fmt.Sprintf("RUNTIME_HOST %q, want %s from service links", env["RUNTIME_HOST"], wantHost))
	}
	if name, _ := argValue(c.Args, "--upstream-server-name"); name != runtimeSvc.Name+".llm.svc" {
		p = append(p, "gateway --upstream-server-name "+name+", want the runtime Service's name")
	}
	staged := map[string]string{} // staged name → Secret file
	for _, a := range spec.InitContainers[0].Args[1:] {
		if src, name, ok := strings.Cut(a, ":"); ok {
			staged[name] = src
		}
	}
	for flag, want := range map[string]string{"--upstream-ca": "/etc/qwen-appliance/upstream-tls/ca.crt", "--upstream-cert": "/etc/qwen-appliance/upstream-tls/tls.crt", "--upstream-key": "/etc/qwen-appliance/upstream-tls/tls.key"} {
		v, ok := argValue(c.Args, flag)
		if !ok || staged[strings.TrimPrefix(v, "/run/qwen-appliance/")] != want {
			p = append(p, fmt.Sprintf("gateway %s %q is not staged from %s", flag, v, want))
		}
	}
	for _, v := range spec.Volumes {
		if v.Name == "upstream-tls" && (v.Secret == nil || v.Secret.SecretName != "rel-qwen-appliance-upstream-tls") {
			p = append(p, fmt.Sprintf("upstream-tls volume %+v", v))
		}
		if v.Image != nil || v.Name == "bundle" || v.Name == "runtime-tls" {
			p = append(p, "the gateway pod mounts "+v.Name)
		}
	}
	for name := range c.Resources.Limits {
		if strings.Contains(string(name), "gpu") {
			p = append(p, "the gateway asks for "+string(name))
		}
	}
	// Only the staging init container sees the Secrets; the gateway reads
	// its 0600 copies, and no other container sees either.
	for _, c := range append(spec.InitContainers, spec.Containers...) {
		for _, m := range c.VolumeMounts {
			switch {
			case (m.Name == "tokens" || m.Name == "tls" || m.Name == "audit-key" || m.Name == "upstream-tls") && c.Name != "stage-secrets",
				m.Name == "run" && c.Name != "stage-secrets" && c.Name != "gateway",
				m.Name == "run" && c.Name == "gateway" && !m.ReadOnly:
				p = append(p, fmt.Sprintf("%s mounts %s (read-only %v)", c.Name, m.Name, m.ReadOnly))
			}
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		p = append(p, "the gateway mounts the service account token")
	}
	return p
}

// serviceProblems checks that the API and metrics Services lead to the
// gateway's pods and the runtime Service to the runtime's, each on its port.
func serviceProblems(services []*corev1.Service, gw, rt *appsv1.Deployment) []string {
	var p []string
	gwLabels, rtLabels := labels.Set(gw.Spec.Template.Labels), labels.Set(rt.Spec.Template.Labels)
	want := map[string]struct {
		pods labels.Set
		port int
	}{
		"rel-qwen-appliance":         {gwLabels, harden.DefaultAPIPort},
		"rel-qwen-appliance-metrics": {gwLabels, 9464},
		"rel-qwen-appliance-runtime": {rtLabels, 8000},
	}
	if len(services) != len(want) {
		p = append(p, fmt.Sprintf("%d services, want %d", len(services), len(want)))
	}
	for _, s := range services {
		w, ok := want[s.Name]
		sel := labels.SelectorFromSet(s.Spec.Selector)
		other := rtLabels
		if w.pods.Get("app.kubernetes.io/component") == "runtime" {
			other = gwLabels
		}
		if !ok || len(s.Spec.Selector) == 0 || !sel.Matches(w.pods) || sel.Matches(other) || len(s.Spec.Ports) != 1 || int(s.Spec.Ports[0].Port) != w.port {
			p = append(p, fmt.Sprintf("service %s selects %v on %+v", s.Name, s.Spec.Selector, s.Spec.Ports))
		}
	}
	return p
}

// onlyPods reports whether peer admits exactly the pods labelled want in
// the policy's own namespace: a pod selector that matches them, not pods
// labelled not, and not arbitrary pods; no namespace selector (which would
// widen it to other namespaces), no CIDR.
func onlyPods(peer networkingv1.NetworkPolicyPeer, want, not labels.Set) bool {
	if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
	return err == nil && sel.Matches(want) && !sel.Matches(not) && !sel.Matches(labels.Set{"app": "anything-else"})
}

// onlyPort reports whether ports is exactly TCP port.
func onlyPort(ports []networkingv1.NetworkPolicyPort, port int) bool {
	return len(ports) == 1 && ports[0].Port != nil && ports[0].Port.IntValue() == port &&
		(ports[0].Protocol == nil || *ports[0].Protocol == corev1.ProtocolTCP) && ports[0].EndPort == nil
}

// policyProblems checks the mirror of the nftables policy: a default deny
// for the namespace; for the gateway's pods ingress only to the API port
// (from the client CIDRs) and the metrics port (from the monitoring
// namespace), egress only to the runtime's pods on the runtime port; for
// the runtime's pods ingress only from the gateway's pods on that port and
// no egress. It returns what is wrong.
func policyProblems(nps []*networkingv1.NetworkPolicy, gw, rt *appsv1.Deployment, withClients bool) []string {
	var p []string
	if len(nps) != 3 {
		return []string{fmt.Sprintf("%d network policies, want a namespace default deny, the gateway's and the runtime's", len(nps))}
	}
	gwLabels, rtLabels := labels.Set(gw.Spec.Template.Labels), labels.Set(rt.Spec.Template.Labels)
	var deny, gwPol, rtPol *networkingv1.NetworkPolicy
	for _, np := range nps {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		switch {
		case err != nil:
			p = append(p, fmt.Sprintf("%s: %v", np.Name, err))
		case sel.Empty():
			deny = np
		case sel.Matches(gwLabels) && !sel.Matches(rtLabels):
			gwPol = np
		case sel.Matches(rtLabels) && !sel.Matches(gwLabels):
			rtPol = np
		default:
			p = append(p, fmt.Sprintf("policy %s selects %v", np.Name, np.Spec.PodSelector))
		}
	}
	if deny == nil || gwPol == nil || rtPol == nil {
		return append(p, "want a default deny, a gateway policy and a runtime policy")
	}
	if len(deny.Spec.Ingress) != 0 || len(deny.Spec.Egress) != 0 || len(deny.Spec.PolicyTypes) != 2 {
		p = append(p, fmt.Sprintf("default deny %+v", deny.Spec))
	}
	for _, np := range []*networkingv1.NetworkPolicy{gwPol, rtPol} {
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			p = append(p, np.Name+" lacks a policy type, leaving that direction open")
		}
	}

	// The runtime: from the gateway's pods on the runtime port; nothing out.
	if len(rtPol.Spec.Egress) != 0 {
		p = append(p, fmt.Sprintf("the runtime may connect out: %+v", rtPol.Spec.Egress))
	}
	if len(rtPol.Spec.Ingress) != 1 {
		p = append(p, fmt.Sprintf("the runtime has %d ingress rules, want 1", len(rtPol.Spec.Ingress)))
	}
	for _, r := range rtPol.Spec.Ingress {
		if len(r.From) != 1 || !onlyPods(r.From[0], gwLabels, rtLabels) || !onlyPort(r.Ports, 8000) {
			p = append(p, fmt.Sprintf("runtime ingress %+v admits more than the gateway's pods on port 8000", r))
		}
	}

	// The gateway: to the runtime's pods on the runtime port only.
	if len(gwPol.Spec.Egress) != 1 || len(gwPol.Spec.Egress[0].To) != 1 || !onlyPods(gwPol.Spec.Egress[0].To[0], rtLabels, gwLabels) || !onlyPort(gwPol.Spec.Egress[0].Ports, 8000) {
		p = append(p, fmt.Sprintf("gateway egress %+v goes elsewhere than the runtime's pods on port 8000", gwPol.Spec.Egress))
	}
	wantRules := 1
	if withClients {
		wantRules = 2
	}
	if len(gwPol.Spec.Ingress) != wantRules {
		p = append(p, fmt.Sprintf("%d gateway ingress rules, want %d", len(gwPol.Spec.Ingress), wantRules))
	}
	for _, r := range gwPol.Spec.Ingress {
		if len(r.Ports) != 1 || len(r.From) == 0 {
			p = append(p, fmt.Sprintf("ingress rule %+v is not one port from named peers", r))
			continue
		}
		switch {
		case onlyPort(r.Ports, harden.DefaultAPIPort): // the port the host firewall opens to clients
			for _, peer := range r.From {
				if peer.IPBlock == nil || peer.NamespaceSelector != nil || peer.PodSelector != nil {
					p = append(p, fmt.Sprintf("API peer %+v is not a CIDR", peer))
				}
			}
		case onlyPort(r.Ports, 9464):
			if len(r.From) != 1 || r.From[0].NamespaceSelector == nil || r.From[0].IPBlock != nil || len(r.From[0].NamespaceSelector.MatchLabels) == 0 {
				p = append(p, fmt.Sprintf("metrics peer %+v is not the monitoring namespace", r.From[0]))
			}
		default:
			p = append(p, fmt.Sprintf("ingress to port %v", r.Ports[0].Port))
		}
	}
	return p
}

// The checkers themselves refuse what they must: a privileged pod, a field
// the API does not have, an unknown kind; a runtime reachable by any pod or
// able to connect out, a gateway without mutual TLS, a vLLM that does not
// require client certificates.
func TestCheckersRefuseBadObjects(t *testing.T) {
	helm := helmPath(t)
	res, stream := renderChart(t, helm, "")
	objs, err := decodeStrict(stream)
	if err != nil {
		t.Fatal(err)
	}
	if p := chartProblems(res, objs, false); len(p) != 0 {
		t.Fatalf("the chart as rendered: %v", p)
	}
	for _, d := range objs.deployments {
		for name, edit := range map[string]func(s *corev1.PodSpec){
			"a privileged container": func(s *corev1.PodSpec) { t := true; s.Containers[0].SecurityContext.Privileged = &t },
			"a container run as root": func(s *corev1.PodSpec) {
				root := int64(0)
				s.Containers[0].SecurityContext.RunAsUser = &root
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
				t.Errorf("%s: %s passed Pod Security restricted (%v)", d.Name, name, err)
			}
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

	policy := func(component string) func(o *objects) *networkingv1.NetworkPolicy {
		return func(o *objects) *networkingv1.NetworkPolicy {
			for _, np := range o.networkPolicies {
				if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"] == component {
					return np
				}
			}
			t.Fatalf("no %s policy", component)
			return nil
		}
	}
	runtimePolicy, gatewayPolicy := policy("runtime"), policy("gateway")
	container := func(o *objects, component string) *corev1.Container {
		return &deployment(o, component).Spec.Template.Spec.Containers[0]
	}
	setArg := func(c *corev1.Container, flag, value string) {
		i := slices.Index(c.Args, flag)
		if i < 0 {
			t.Fatalf("%s has no %s", c.Name, flag)
		}
		c.Args[i+1] = value
	}
	dropArg := func(c *corev1.Container, flag string) {
		i := slices.Index(c.Args, flag)
		if i < 0 {
			t.Fatalf("%s has no %s", c.Name, flag)
		}
		c.Args = slices.Delete(c.Args, i, i+2)
	}
	port22 := intstr.FromInt32(22)
	for name, edit := range map[string]func(o *objects){
		"a runtime policy admitting any pod": func(o *objects) {
			runtimePolicy(o).Spec.Ingress[0].From[0].PodSelector = &metav1.LabelSelector{}
		},
		"a runtime policy admitting the gateway's labels from any namespace": func(o *objects) {
			runtimePolicy(o).Spec.Ingress[0].From[0].NamespaceSelector = &metav1.LabelSelector{}
		},
		"a runtime policy admitting any source": func(o *objects) { runtimePolicy(o).Spec.Ingress[0].From = nil },
		"a runtime policy on any port":          func(o *objects) { runtimePolicy(o).Spec.Ingress[0].Ports = nil },
		"a runtime that may connect out": func(o *objects) {
			runtimePolicy(o).Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{}}
		},
		"a runtime policy without Egress type": func(o *objects) {
			runtimePolicy(o).Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		},
		"a gateway that may connect anywhere": func(o *objects) { gatewayPolicy(o).Spec.Egress[0].To = nil },
		"a gateway that may reach DNS": func(o *objects) {
			gatewayPolicy(o).Spec.Egress = append(gatewayPolicy(o).Spec.Egress, networkingv1.NetworkPolicyEgressRule{})
		},
		"a gateway open on SSH": func(o *objects) {
			gatewayPolicy(o).Spec.Ingress = append(gatewayPolicy(o).Spec.Ingress, networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: &port22}}})
		},
		"a policy for every pod of the release": func(o *objects) {
			delete(runtimePolicy(o).Spec.PodSelector.MatchLabels, "app.kubernetes.io/component")
		},
		"vLLM not requiring client certificates": func(o *objects) { setArg(container(o, "runtime"), "--ssl-cert-reqs", "0") },
		"vLLM without --ssl-cert-reqs":           func(o *objects) { dropArg(container(o, "runtime"), "--ssl-cert-reqs") },
		"vLLM without a CA":                      func(o *objects) { dropArg(container(o, "runtime"), "--ssl-ca-certs") },
		"vLLM with a key outside its Secret":     func(o *objects) { setArg(container(o, "runtime"), "--ssl-keyfile", "/tmp/tls.key") },
		"a gateway without --upstream-ca":        func(o *objects) { dropArg(container(o, "gateway"), "--upstream-ca") },
		"a gateway without a client key":         func(o *objects) { dropArg(container(o, "gateway"), "--upstream-key") },
		"a gateway with plain HTTP upstream": func(o *objects) {
			setArg(container(o, "gateway"), "--upstream", "http://$(RUNTIME_HOST):8000")
		},
		"a gateway checking another name": func(o *objects) {
			setArg(container(o, "gateway"), "--upstream-server-name", "evil.example")
		},
		"a runtime Service selecting the gateway": func(o *objects) {
			o.services[2].Spec.Selector["app.kubernetes.io/component"] = "gateway"
		},
		"the runtime pod mounting the token Secret": func(o *objects) {
			s := &deployment(o, "runtime").Spec.Template.Spec
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "tokens", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "rel-qwen-appliance-tokens"}}})
		},
		"a runtime probe over plain HTTP": func(o *objects) {
			c := container(o, "runtime")
			c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health"}}}
		},
	} {
		bad, err := decodeStrict(stream) // a fresh copy to break
		if err != nil {
			t.Fatal(err)
		}
		edit(bad)
		if p := chartProblems(res, bad, false); len(p) == 0 {
			t.Errorf("%s passed the chart's checks", name)
		}
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

// pinnedImages maps the built images' roles to their pinned references.
func pinnedImages(res *Result) map[string]string {
	images := map[string]string{}
	for _, im := range res.Images {
		images[im.Role] = im.Pinned()
	}
	return images
}
