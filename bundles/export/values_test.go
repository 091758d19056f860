package export

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValuesOverridesAndRefusals(t *testing.T) {
	bundle, v := testBundle(t)
	o := testOptions(t, bundle, v)
	o.Values = []ValuesFile{{Name: "site.yaml", Data: []byte("gateway:\n  clientCIDRs: [10.20.0.0/16]\nruntime:\n  replicas: 3\n")}}
	res, err := Helm(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	values, _ := os.ReadFile(filepath.Join(res.Chart, "values.yaml"))
	for _, want := range []string{"10.20.0.0/16", "  replicas: 3", "# Who may reach the API port"} {
		if !strings.Contains(string(values), want) {
			t.Errorf("values.yaml lacks %q:\n%s", want, values)
		}
	}
	for name, doc := range map[string]string{
		"an unknown key":                   "gateway:\n  clientCIDR: [10.0.0.0/8]\n",
		"a wrong type":                     "runtime:\n  replicas: many\n",
		"the old single replicas":          "replicas: 2\n",
		"a secret's key in values":         "secrets:\n  runtimeTLS: {name: x, key: KEY}\n",
		"a runtime address that is a name": "runtime:\n  serviceClusterIP: runtime.example\n",
		"a tag instead of pin":             "images:\n  runtime: vllm/vllm-openai:latest\n",
		"zero GPUs":                        "runtime:\n  tensorParallel: 0\n",
		"an alias":                         "a: &x 1\nreplicas: *x\n",
		"a CIDR that is a name":            "gateway:\n  clientCIDRs: [intranet]\n",
		"one ReadWriteOnce claim for two":  "gateway:\n  replicas: 2\naudit:\n  existingClaim: site-audit\n",
	} {
		o := testOptions(t, bundle, v)
		o.Values = []ValuesFile{{Name: "bad.yaml", Data: []byte(doc)}}
		_, err := Helm(context.Background(), o)
		var ve *ValuesError
		if !errors.As(err, &ve) {
			t.Errorf("%s: err = %v, want a ValuesError", name, err)
		}
	}
}

// FuzzValues feeds arbitrary --values files to the merge: it must never
// panic, and whatever it accepts must still pass the chart's schema with
// the pinned images unchanged unless the file set them to other pins.
func FuzzValues(f *testing.F) {
	f.Add([]byte("gateway:\n  clientCIDRs: [10.0.0.0/8]\n  replicas: 2\nruntime: {replicas: 4}\n"))
	f.Add([]byte("runtime: {tensorParallel: 8, nodeSelector: {gpu: h100}}\n"))
	f.Add([]byte("a: &x 1\nb: *x\n"))
	f.Add([]byte("gateway: {replicas: 3}\naudit: {existingClaim: c, accessMode: ReadWriteMany}\n"))
	f.Add([]byte("- list\n"))
	f.Add([]byte(""))
	facts := valuesFacts{Name: "b", Version: 1, ManifestSHA256: strings.Repeat("a", 64), ModelPath: "m.gguf", ServedModelName: "b",
		GatewayImage: "r/g:t@sha256:" + strings.Repeat("b", 64), ModelImage: "r/m:t@sha256:" + strings.Repeat("c", 64), RuntimeImage: runtimeImage,
		TensorParallel: 1, TPSource: "test", Dtype: "auto", TrustKeys: []trustKey{{ID: "0123456789abcdef", Key: "k"}}, Threshold: 1}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := renderValues(facts, map[string][]byte{"f.yaml": data}, []string{"f.yaml"})
		if err != nil {
			return
		}
		if err := checkValues(out); err != nil {
			t.Fatalf("accepted values fail the schema: %v", err)
		}
		if err := checkSharedClaim(out); err != nil {
			t.Fatalf("accepted values share a claim the chart refuses: %v", err)
		}
	})
}
