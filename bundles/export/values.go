package export

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/template"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// valuesTemplate is the chart's values.yaml: the bundle's facts and the
// images pinned by digest, then every setting an operator may change, each
// with what it does. Options.Values files are merged into it (comments
// kept), and the result must pass chart/values.schema.json.
var valuesTemplate = template.Must(template.New("values").Parse(`# Written by 'qwen-appliance export helm' from {{.Name}} version {{.Version}}.
# The bundle and image lines pin what was verified and built; change them
# only by exporting again.
bundle:
  name: {{.Name}}
  version: {{.Version}}
  manifestSHA256: {{.ManifestSHA256}}
  # Inside the bundle image, mounted at /bundle.
  modelPath: {{printf "%q" .ModelPath}}
  servedModelName: {{printf "%q" .ServedModelName}}

images:
  # Built by export from this tool's binary and from the signed bundle,
  # written to the OCI layout beside the chart (images/); push them to the
  # cluster's registry under these names (or let Zarf do it).
  gateway: {{printf "%q" .GatewayImage}}
  model: {{printf "%q" .ModelImage}}
  # The vLLM OpenAI server image, by digest (--runtime-image).
  runtime: {{printf "%q" .RuntimeImage}}
  pullPolicy: IfNotPresent

runtime:
  # vLLM pods; more replicas serve more requests. The gateway spreads its
  # requests over them through the runtime Service.
  replicas: 1
  # GPUs one replica spans ({{.TPSource}}).
  tensorParallel: {{.TensorParallel}}
  # The port vLLM serves mutual TLS on, for the gateway's pods alone.
  port: 8000
  # Pin the runtime Service's cluster IP (an address from the cluster's
  # service range) only where the gateway cannot take it from service
  # links: single-stack IPv6 clusters. Empty: Kubernetes picks it.
  serviceClusterIP: ""
  # Tokens of context; 0 leaves vLLM's default (the model's maximum).
  maxModelLen: {{.MaxModelLen}}
  # Share of each GPU's memory vLLM may take; 0 leaves vLLM's default.
  gpuMemoryUtilization: {{.GPUMemoryUtilization}}
  dtype: {{.Dtype}}
  # The extended resource the GPU device plugin offers.
  gpuResource: nvidia.com/gpu
  runtimeClassName: ""
  cpu: "4"
  memory: 32Gi
  tmpSize: 8Gi
  shmSize: 8Gi
  extraArgs: []
  nodeSelector: {}
  tolerations: []

gateway:
  # Gateway pods (serve): they hold no GPU, so add them for connections
  # and TLS, not for tokens per second.
  replicas: 1
  port: 8443
  metricsPort: 9464
  # Who may reach the API port (the NetworkPolicy's only ingress besides
  # metrics); empty lets no client in.
  clientCIDRs: []
  maxConcurrent: 64
  maxTokens: 4096
  # Also log prompts and answers in the audit log.
  auditContent: false
  resources:
    requests: {cpu: 250m, memory: 128Mi}
    limits: {memory: 512Mi}
  nodeSelector: {}

secrets:
  # false: the Secrets below must exist. true: the chart makes them from
  # contents given at install time with --set-file, never from a file in
  # version control.
  create: false
  # tokens.json from 'qwen-appliance tokens create' (hashes, not tokens).
  tokens: {name: "", content: ""}
  # A kubernetes.io/tls Secret (tls.crt, tls.key).
  tls: {name: "", cert: "", key: ""}
  # The key that signs audit checkpoints ('qwen-appliance keys generate').
  auditKey: {enabled: false, name: "", content: ""}
  # Mutual TLS between gateway and runtime, from 'qwen-appliance tls pair'
  # (see the chart's notes for the commands). These two are never made by
  # the chart: create them with kubectl, so their keys stay out of values
  # and of Helm's release record. Keys tls.crt, tls.key and ca.crt.
  # The runtime's server certificate, its key and the pair's CA:
  runtimeTLS: {name: ""}
  # The gateway's client certificate, its key and the pair's CA:
  upstreamTLS: {name: ""}

trust:
  # The public keys the init container checks the bundle's signature with.
  keys:
{{- range .TrustKeys}}
    - id: {{.ID}}
      key: {{printf "%q" .Key}}
{{- end}}
  threshold: {{.Threshold}}
  # Pods refuse to start once the manifest has expired unless this is true.
  allowExpired: false

audit:
  # Empty: each gateway replica gets its own claim of this class, size and
  # access mode (audit-RELEASE-qwen-appliance-gateway-N), fixed at install
  # (the API refuses changes to a StatefulSet's claim templates), kept on
  # scale-down and 'helm uninstall'. Or one claim of your own, shared by
  # all replicas, each writing its own file (the pods' fsGroup 65532 must
  # be able to write it); more than one replica then needs ReadWriteMany,
  # and accessMode must say so.
  existingClaim: ""
  storageClassName: ""
  size: 10Gi
  accessMode: ReadWriteOnce

networkPolicy:
  # Also deny all traffic of every other pod in the namespace.
  defaultDenyNamespace: true
  # Where Prometheus runs; it alone may reach the metrics port.
  metricsNamespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: monitoring

monitoring:
  # A prometheus-operator ServiceMonitor besides the pod annotations.
  serviceMonitor: false

service:
  type: ClusterIP

securityContext:
  uid: 65532
`))

// valuesFacts fill valuesTemplate.
type valuesFacts struct {
	Name                 string
	Version              uint64
	ManifestSHA256       string
	ModelPath            string
	ServedModelName      string
	GatewayImage         string
	ModelImage           string
	RuntimeImage         string
	TensorParallel       int
	TPSource             string
	MaxModelLen          int
	GPUMemoryUtilization float64
	Dtype                string
	TrustKeys            []trustKey
	Threshold            int
}

type trustKey struct{ ID, Key string }

// ValuesError is a values file (or the merge result) the chart refuses.
type ValuesError struct {
	File string
	Err  error
}

func (e *ValuesError) Error() string { return fmt.Sprintf("values %s: %v", e.File, e.Err) }
func (e *ValuesError) Unwrap() error { return e.Err }

// renderValues writes values.yaml: the template filled with facts, then
// each override file merged in, then checked against the chart's schema.
func renderValues(facts valuesFacts, overrides map[string][]byte, order []string) ([]byte, error) {
	var buf bytes.Buffer
	if err := valuesTemplate.Execute(&buf, facts); err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(buf.Bytes(), &doc); err != nil {
		return nil, fmt.Errorf("values template: %w", err)
	}
	for _, name := range order {
		var over yaml.Node
		if err := yaml.Unmarshal(overrides[name], &over); err != nil {
			return nil, &ValuesError{File: name, Err: err}
		}
		if len(over.Content) == 0 {
			continue
		}
		if err := mergeNode(doc.Content[0], over.Content[0], ""); err != nil {
			return nil, &ValuesError{File: name, Err: err}
		}
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := checkValues(out.Bytes()); err != nil {
		return nil, &ValuesError{File: strings.Join(append([]string{"(merged)"}, order...), ", "), Err: err}
	}
	if err := checkSharedClaim(out.Bytes()); err != nil {
		return nil, &ValuesError{File: strings.Join(append([]string{"(merged)"}, order...), ", "), Err: err}
	}
	return out.Bytes(), nil
}

// ErrSharedClaim is matched by a ValuesError whose audit.existingClaim
// several gateway replicas could not all mount.
var ErrSharedClaim = errors.New("shared audit claim not ReadWriteMany")

// checkSharedClaim refuses at export what the gateway's template refuses at
// install (with the same words): one existing audit claim shared by several
// gateway replicas but not ReadWriteMany, which the other replicas could
// not mount. Without an existing claim each replica has its own.
func checkSharedClaim(data []byte) error {
	var v struct {
		Gateway struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"gateway"`
		Audit struct {
			ExistingClaim string `yaml:"existingClaim"`
			AccessMode    string `yaml:"accessMode"`
		} `yaml:"audit"`
	}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return err
	}
	a := v.Audit
	if a.ExistingClaim != "" && v.Gateway.Replicas > 1 && a.AccessMode != "ReadWriteMany" {
		return fmt.Errorf("%w: audit.existingClaim %q is one claim shared by all %d gateway replicas, and audit.accessMode is %s: "+
			"the other replicas could not mount it. Use a ReadWriteMany claim (and set audit.accessMode=ReadWriteMany), "+
			"gateway.replicas=1, or leave audit.existingClaim empty for one claim per replica", ErrSharedClaim, a.ExistingClaim, v.Gateway.Replicas, a.AccessMode)
	}
	return nil
}

// mergeNode merges the mapping over into dst: mappings merge key by key,
// anything else replaces. Anchors and aliases are refused (they would make
// the merged file mean something else than it reads).
func mergeNode(dst, over *yaml.Node, at string) error {
	if over.Kind == yaml.AliasNode || over.Anchor != "" {
		return fmt.Errorf("%s line %d: anchors and aliases are not supported", orRoot(at), over.Line)
	}
	if over.Kind != yaml.MappingNode || dst.Kind != yaml.MappingNode {
		if err := noAliases(over); err != nil {
			return err
		}
		*dst = *over
		return nil
	}
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		path := strings.TrimPrefix(at+"."+k.Value, ".")
		found := false
		for j := 0; j+1 < len(dst.Content); j += 2 {
			if dst.Content[j].Value == k.Value {
				found = true
				if err := mergeNode(dst.Content[j+1], v, path); err != nil {
					return err
				}
			}
		}
		if !found {
			if err := noAliases(v); err != nil {
				return err
			}
			// Kept so that the schema names it; the chart has no such setting.
			dst.Content = append(dst.Content, k, v)
		}
	}
	return nil
}

func noAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return fmt.Errorf("line %d: anchors and aliases are not supported", n.Line)
	}
	for _, c := range n.Content {
		if err := noAliases(c); err != nil {
			return err
		}
	}
	return nil
}

func orRoot(s string) string {
	if s == "" {
		return "(top level)"
	}
	return s
}

// checkValues validates values YAML against the chart's values.schema.json,
// the same schema Helm applies on lint, template and install.
func checkValues(data []byte) error {
	return validateYAML(data, valuesSchema, "")
}

// validateYAML checks a YAML document against the schema schema returns;
// errors start with prefix.
func validateYAML(data []byte, schema func() (*jsonschema.Schema, error), prefix string) error {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return err
	}
	// Through JSON, so that the validator sees JSON types.
	j, err := json.Marshal(v)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return err
	}
	sch, err := schema()
	if err != nil {
		return err
	}
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("%s%s", prefix, strings.TrimSpace(err.Error()))
	}
	return nil
}

// valuesSchema compiles the chart's schema once.
var valuesSchema = sync.OnceValues(compileValuesSchema)

func compileValuesSchema() (*jsonschema.Schema, error) {
	raw, err := chartFS.ReadFile("chart/values.schema.json")
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("values.schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("values.schema.json")
}
