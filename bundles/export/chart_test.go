package export

import (
	"context"
	"errors"
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
	"k8s.io/apimachinery/pkg/api/equality"
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
		{"one existing ReadWriteMany claim for two replicas", "gateway:\n  replicas: 2\naudit:\n  existingClaim: site-audit\n  accessMode: ReadWriteMany\n", nil},
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
			gw, rt := gatewaySet(objs), runtimeDeployment(objs)
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
			if claim := strings.Contains(c.values, "existingClaim"); claim != (len(gw.Spec.VolumeClaimTemplates) == 0) {
				t.Errorf("existing claim %v, but %d claim templates", claim, len(gw.Spec.VolumeClaimTemplates))
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

// gatewaySet returns the gateway's StatefulSet, or nil.
func gatewaySet(objs *objects) *appsv1.StatefulSet {
	for _, st := range objs.statefulSets {
		if st.Spec.Template.Labels["app.kubernetes.io/component"] == "gateway" {
			return st
		}
	}
	return nil
}

// runtimeDeployment returns the runtime's Deployment, or nil.
func runtimeDeployment(objs *objects) *appsv1.Deployment {
	for _, d := range objs.deployments {
		if d.Spec.Template.Labels["app.kubernetes.io/component"] == "runtime" {
			return d
		}
	}
	return nil
}

// podTemplate returns the pods of a component: the gateway's StatefulSet's
// or the runtime's Deployment's.
func podTemplate(objs *objects, component string) *corev1.PodTemplateSpec {
	if component == "gateway" {
		return &gatewaySet(objs).Spec.Template
	}
	return &runtimeDeployment(objs).Spec.Template
}

// chartProblems checks everything the chart promises about a rendered
// release and returns what is wrong: a runtime Deployment and a gateway
// StatefulSet whose pods pass Pod Security "restricted", the runtime
// (runtimeProblems), the gateway (gatewayProblems) and its audit log
// (auditProblems), the Services and the NetworkPolicies (policyProblems).
func chartProblems(res *Result, objs *objects, withClients bool) []string {
	gw, rt := gatewaySet(objs), runtimeDeployment(objs)
	if len(objs.deployments) != 1 || len(objs.statefulSets) != 1 || gw == nil || rt == nil {
		return []string{fmt.Sprintf("%d deployments and %d stateful sets, want a runtime Deployment and a gateway StatefulSet", len(objs.deployments), len(objs.statefulSets))}
	}
	var p []string
	for _, w := range []struct {
		name     string
		selector *metav1.LabelSelector
		pods     *corev1.PodTemplateSpec
	}{{gw.Name, gw.Spec.Selector, &gw.Spec.Template}, {rt.Name, rt.Spec.Selector, &rt.Spec.Template}} {
		if v, err := restrictedViolations(&w.pods.ObjectMeta, &w.pods.Spec); err != nil || len(v) > 0 {
			p = append(p, fmt.Sprintf("%s pod is not restricted: %v %v", w.name, v, err))
		}
		if sel, err := metav1.LabelSelectorAsSelector(w.selector); err != nil || !sel.Matches(labels.Set(w.pods.Labels)) {
			p = append(p, fmt.Sprintf("%s selects other pods than its own: %v", w.name, err))
		}
	}
	gwLabels, rtLabels := labels.Set(gw.Spec.Template.Labels), labels.Set(rt.Spec.Template.Labels)
	p = append(p, runtimeProblems(res, rt)...)
	p = append(p, gatewayProblems(res, gw, objs.services)...)
	p = append(p, auditProblems(gw)...)
	p = append(p, serviceProblems(objs.services, gwLabels, rtLabels)...)
	p = append(p, policyProblems(objs.networkPolicies, gwLabels, rtLabels, withClients)...)
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
func gatewayProblems(res *Result, gw *appsv1.StatefulSet, services []*corev1.Service) []string {
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

// auditLogPath is the gateway's --audit-log: a file named after the pod
// (POD_NAME), in the directory the audit volume is mounted on.
const auditLogPath = "/var/lib/qwen-appliance/audit/$(POD_NAME).log"

// auditProblems checks that each gateway replica's audit chain continues
// across restarts and outlives the release: the log is named after the
// pod (POD_NAME from metadata.name, stable in a StatefulSet) and lies on
// the replica's own claim from the StatefulSet's claim template, or, with
// audit.existingClaim, on that claim; claims are retained when the set is
// deleted or scaled down. The claim template carries only the selector's
// labels: the API refuses changes to it after install, so a label that
// follows the bundle's version would fail every upgrade.
func auditProblems(gw *appsv1.StatefulSet) []string {
	var p []string
	spec := &gw.Spec.Template.Spec
	c := spec.Containers[0]
	path, _ := argValue(c.Args, "--audit-log")
	if path != auditLogPath {
		p = append(p, fmt.Sprintf("gateway --audit-log %q, want %s: named after the stable pod name", path, auditLogPath))
	}
	var podName *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "POD_NAME" {
			podName = &c.Env[i]
		}
	}
	if podName == nil || podName.Value != "" || podName.ValueFrom == nil || podName.ValueFrom.FieldRef == nil || podName.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		p = append(p, fmt.Sprintf("gateway POD_NAME %+v is not the pod's name", podName))
	}
	if r := gw.Spec.PersistentVolumeClaimRetentionPolicy; r == nil || r.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType || r.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		p = append(p, fmt.Sprintf("audit claims not retained on delete and scale-down: %+v", r))
	}
	if gw.Spec.ServiceName != "" {
		p = append(p, fmt.Sprintf("gateway serviceName %q: the chart makes no headless Service", gw.Spec.ServiceName))
	}

	var mount *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || mount.ReadOnly {
		return append(p, fmt.Sprintf("the audit log %q is on no writable volume: %+v", path, mount))
	}
	var claim *corev1.PersistentVolumeClaim
	for i := range gw.Spec.VolumeClaimTemplates {
		if gw.Spec.VolumeClaimTemplates[i].Name == mount.Name {
			claim = &gw.Spec.VolumeClaimTemplates[i]
		}
	}
	var vol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == mount.Name {
			vol = &spec.Volumes[i]
		}
	}
	switch {
	case claim != nil && vol == nil: // one claim per replica
		if len(claim.Spec.AccessModes) != 1 || claim.Spec.Resources.Requests.Storage().IsZero() {
			p = append(p, fmt.Sprintf("audit claim template %+v", claim.Spec))
		}
		for k, v := range claim.Labels {
			if gw.Spec.Selector.MatchLabels[k] != v {
				p = append(p, fmt.Sprintf("audit claim template label %s=%s is not the selector's: the API refuses changes to claim templates", k, v))
			}
		}
	case claim == nil && vol != nil && vol.PersistentVolumeClaim != nil && vol.PersistentVolumeClaim.ClaimName != "" && len(gw.Spec.VolumeClaimTemplates) == 0:
		// audit.existingClaim, shared by the replicas
	default:
		p = append(p, fmt.Sprintf("the audit log's volume %q is neither the replica's own claim nor an existing claim: template %v, volume %+v", mount.Name, claim != nil, vol))
	}
	return p
}

// serviceProblems checks that the API and metrics Services lead to the
// gateway's pods and the runtime Service to the runtime's, each on its port.
func serviceProblems(services []*corev1.Service, gwLabels, rtLabels labels.Set) []string {
	var p []string
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
func policyProblems(nps []*networkingv1.NetworkPolicy, gwLabels, rtLabels labels.Set, withClients bool) []string {
	var p []string
	if len(nps) != 3 {
		return []string{fmt.Sprintf("%d network policies, want a namespace default deny, the gateway's and the runtime's", len(nps))}
	}
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
	for _, component := range []string{"gateway", "runtime"} {
		pods := podTemplate(objs, component)
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
			spec := pods.Spec.DeepCopy()
			edit(spec)
			if v, err := restrictedViolations(&pods.ObjectMeta, spec); err != nil || len(v) == 0 {
				t.Errorf("%s: %s passed Pod Security restricted (%v)", component, name, err)
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
		return &podTemplate(o, component).Spec.Containers[0]
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
			s := &podTemplate(o, "runtime").Spec
			s.Volumes = append(s.Volumes, corev1.Volume{Name: "tokens", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "rel-qwen-appliance-tokens"}}})
		},
		"audit claims deleted with the StatefulSet": func(o *objects) {
			gatewaySet(o).Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
		},
		"audit claims deleted on scale-down": func(o *objects) {
			gatewaySet(o).Spec.PersistentVolumeClaimRetentionPolicy.WhenScaled = appsv1.DeletePersistentVolumeClaimRetentionPolicyType
		},
		"the audit log on an emptyDir": func(o *objects) {
			st := gatewaySet(o)
			st.Spec.VolumeClaimTemplates = nil
			st.Spec.Template.Spec.Volumes = append(st.Spec.Template.Spec.Volumes, corev1.Volume{Name: "audit", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		},
		"the audit log on the memory volume": func(o *objects) {
			c := container(o, "gateway")
			for i := range c.VolumeMounts {
				if c.VolumeMounts[i].Name == "audit" {
					c.VolumeMounts[i].Name = "run"
				}
			}
		},
		"the audit log outside the audit volume": func(o *objects) {
			setArg(container(o, "gateway"), "--audit-log", "/tmp/$(POD_NAME).log")
		},
		"an audit log not named after the pod": func(o *objects) {
			setArg(container(o, "gateway"), "--audit-log", "/var/lib/qwen-appliance/audit/gateway.log")
		},
		"POD_NAME from the pod's UID": func(o *objects) {
			for _, e := range container(o, "gateway").Env {
				if e.Name == "POD_NAME" {
					e.ValueFrom.FieldRef.FieldPath = "metadata.uid"
				}
			}
		},
		"an audit claim template labelled with the version": func(o *objects) {
			gatewaySet(o).Spec.VolumeClaimTemplates[0].Labels["app.kubernetes.io/version"] = "1"
		},
		"a serviceName without its Service": func(o *objects) { gatewaySet(o).Spec.ServiceName = "rel-qwen-appliance-gateway" },
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

// The gateway's template refuses at lint, template and install what could
// not run, in the words export uses for the same values: one ReadWriteOnce
// (or ReadWriteOncePod) existing claim shared by several replicas, and a
// release name too long for a StatefulSet's pod labels. A ReadWriteMany
// claim, one replica, and a name of 29 characters pass.
func TestChartRefusesUnmountableAuditClaims(t *testing.T) {
	helm := helmPath(t)
	bundle, v := testBundle(t)
	res, err := Helm(context.Background(), testOptions(t, bundle, v))
	if err != nil {
		t.Fatal(err)
	}
	template := func(release string, set ...string) (string, error) {
		args := []string{"template", release, res.Chart, "--namespace", "llm", "--kube-version", kubeVersion}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		return runHelm(t, helm, args...)
	}
	shared := "audit.existingClaim %q is one claim shared by all %d gateway replicas, and audit.accessMode is %s"
	refusal := "" // the whole message of the first refusal
	for _, c := range []struct {
		set  []string
		want string // in the refusal; empty: renders
	}{
		{[]string{"audit.existingClaim=site-audit", "gateway.replicas=2"}, fmt.Sprintf(shared, "site-audit", 2, "ReadWriteOnce")},
		{[]string{"audit.existingClaim=site-audit", "gateway.replicas=3", "audit.accessMode=ReadWriteOncePod"}, fmt.Sprintf(shared, "site-audit", 3, "ReadWriteOncePod")},
		{[]string{"audit.existingClaim=site-audit", "gateway.replicas=2", "audit.accessMode=ReadWriteMany"}, ""},
		{[]string{"audit.existingClaim=site-audit", "gateway.replicas=1"}, ""},
		{[]string{"gateway.replicas=4"}, ""},
	} {
		out, err := template("rel", c.set...)
		if c.want == "" && err != nil {
			t.Errorf("%v: %v\n%s", c.set, err, out)
		}
		if c.want != "" && (err == nil || !strings.Contains(out, c.want)) {
			t.Errorf("%v rendered (%v), want a refusal saying %q:\n%s", c.set, err, c.want, out)
		}
		if i := strings.Index(out, c.want); c.want != "" && i >= 0 && refusal == "" {
			refusal, _, _ = strings.Cut(out[i:], "\n")
		}
	}
	// export refuses the same values with the same words.
	if !strings.HasSuffix(refusal, "or leave audit.existingClaim empty for one claim per replica") {
		t.Fatalf("helm's refusal %q is not the whole message", refusal)
	}
	o := testOptions(t, bundle, v)
	o.Values = []ValuesFile{{Name: "site.yaml", Data: []byte("gateway:\n  replicas: 2\naudit:\n  existingClaim: site-audit\n")}}
	var ve *ValuesError
	if _, err := Helm(context.Background(), o); !errors.As(err, &ve) || !errors.Is(err, ErrSharedClaim) || !strings.Contains(err.Error(), refusal) {
		t.Errorf("export with a shared ReadWriteOnce claim: %v", err)
	}

	if out, err := template(strings.Repeat("r", 30)); err == nil || !strings.Contains(out, "more than the 52") {
		t.Errorf("a 30-character release name rendered (%v):\n%s", err, out)
	}
	if out, err := template(strings.Repeat("r", 29)); err != nil {
		t.Errorf("a 29-character release name: %v\n%s", err, out)
	}
}

// An upgrade to another bundle's chart (another chart version, version
// label and gateway image) with more replicas changes only what the API
// lets a StatefulSet change: its selector, claim templates, serviceName and
// pod management policy stay as they are, or 'helm upgrade' would be
// refused.
func TestGatewayUpgradeKeepsImmutableFields(t *testing.T) {
	helm := helmPath(t)
	bundle, v := testBundle(t)
	res, err := Helm(context.Background(), testOptions(t, bundle, v))
	if err != nil {
		t.Fatal(err)
	}
	render := func(set ...string) *appsv1.StatefulSet {
		t.Helper()
		args := []string{"template", "rel", res.Chart, "--namespace", "llm", "--kube-version", kubeVersion}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := runHelm(t, helm, args...)
		if err != nil {
			t.Fatalf("helm template: %v\n%s", err, out)
		}
		objs, err := decodeStrict([]byte(out))
		if err != nil {
			t.Fatal(err)
		}
		return gatewaySet(objs)
	}
	before := render()
	chartYAML := filepath.Join(res.Chart, "Chart.yaml")
	data, _ := os.ReadFile(chartYAML)
	next := res.Version + 1
	data = []byte(strings.Replace(string(data), fmt.Sprintf("\nversion: %d.0.0\n", res.Version), fmt.Sprintf("\nversion: %d.0.0\n", next), 1))
	if err := os.WriteFile(chartYAML, data, 0o644); err != nil {
		t.Fatal(err)
	}
	after := render(fmt.Sprintf("bundle.version=%d", next), "gateway.replicas=3", "images.gateway=r/g:v2@sha256:"+strings.Repeat("e", 64))
	if after.Labels["helm.sh/chart"] != fmt.Sprintf("qwen-appliance-%d.0.0", next) || after.Labels["app.kubernetes.io/version"] != fmt.Sprint(next) ||
		*after.Spec.Replicas != 3 || after.Spec.Template.Spec.Containers[0].Image == before.Spec.Template.Spec.Containers[0].Image {
		t.Fatalf("the upgrade rendered the same release: %v", after.Labels)
	}
	for field, same := range map[string]bool{
		"selector":             equality.Semantic.DeepEqual(before.Spec.Selector, after.Spec.Selector),
		"volumeClaimTemplates": equality.Semantic.DeepEqual(before.Spec.VolumeClaimTemplates, after.Spec.VolumeClaimTemplates),
		"serviceName":          before.Spec.ServiceName == after.Spec.ServiceName,
		"podManagementPolicy":  before.Spec.PodManagementPolicy == after.Spec.PodManagementPolicy,
	} {
		if !same {
			t.Errorf("the upgrade changes the gateway StatefulSet's %s, which the API refuses", field)
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
