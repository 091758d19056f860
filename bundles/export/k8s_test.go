package export

// Test helpers that judge rendered Kubernetes objects with Kubernetes' own
// code: strict decoding into the k8s.io/api types, and the Pod Security
// admission library at "restricted". They live in test files so the
// Kubernetes modules never reach the binary.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// serviceMonitor is the part of prometheus-operator's ServiceMonitor the
// chart writes; its CRD types are not in k8s.io/api.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// objects is a rendered chart, decoded.
type objects struct {
	all             []any
	deployments     []*appsv1.Deployment
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	networkPolicies []*networkingv1.NetworkPolicy
	secrets         []*corev1.Secret
	configMaps      []*corev1.ConfigMap
}

// decodeStrict splits a multi-document YAML stream and decodes every
// document into its k8s.io/api type, refusing unknown kinds, unknown or
// misspelt fields and duplicate keys.
func decodeStrict(stream []byte) (*objects, error) {
	out := &objects{}
	for i, doc := range splitYAML(stream) {
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if string(j) == "null" {
			continue
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(j, &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			d := &appsv1.Deployment{}
			out.deployments, obj = append(out.deployments, d), d
		case "apps/v1 StatefulSet":
			st := &appsv1.StatefulSet{}
			out.statefulSets, obj = append(out.statefulSets, st), st
		case "v1 Service":
			s := &corev1.Service{}
			out.services, obj = append(out.services, s), s
		case "networking.k8s.io/v1 NetworkPolicy":
			n := &networkingv1.NetworkPolicy{}
			out.networkPolicies, obj = append(out.networkPolicies, n), n
		case "v1 Secret":
			s := &corev1.Secret{}
			out.secrets, obj = append(out.secrets, s), s
		case "v1 ConfigMap":
			c := &corev1.ConfigMap{}
			out.configMaps, obj = append(out.configMaps, c), c
		case "v1 ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1 PersistentVolumeClaim":
			obj = &corev1.PersistentVolumeClaim{}
		case "monitoring.coreos.com/v1 ServiceMonitor":
			obj = &serviceMonitor{}
		default:
			return nil, fmt.Errorf("document %d: unexpected kind %q %q", i, tm.APIVersion, tm.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, fmt.Errorf("document %d (%s): trailing data", i, tm.Kind)
		}
		out.all = append(out.all, obj)
	}
	return out, nil
}

// splitYAML splits a stream on "---" document separators.
func splitYAML(stream []byte) [][]byte {
	var docs [][]byte
	var cur []string
	for _, line := range strings.Split(string(stream), "\n") {
		if strings.TrimRight(line, " ") == "---" {
			docs = append(docs, []byte(strings.Join(cur, "\n")))
			cur = nil
			continue
		}
		cur = append(cur, line)
	}
	return append(docs, []byte(strings.Join(cur, "\n")))
}

// restrictedViolations evaluates a pod with the Pod Security admission
// library at the "restricted" level of the newest policy version and
// returns what it forbids, one line per failed check.
func restrictedViolations(meta *metav1.ObjectMeta, spec *corev1.PodSpec) ([]string, error) {
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range ev.EvaluatePod(psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}, meta, spec) {
		if !r.Allowed {
			out = append(out, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return out, nil
}
