package specs

import (
	"strings"
	"testing"
)

func TestEmbeddedSpecsParse(t *testing.T) {
	names := Names()
	for _, want := range []string{"demo", "qwen2.5-7b-instruct", "qwen2.5-7b-instruct-gguf"} {
		if !strings.Contains(strings.Join(names, ","), want) {
			t.Errorf("built-in spec %s missing (have %v)", want, names)
		}
	}
	for _, n := range names {
		s, err := Load(n)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if s.Name != n {
			t.Errorf("%s: name %q", n, s.Name)
		}
	}
	s, _ := Load("qwen2.5-7b-instruct")
	m := s.Meta()
	if m.Model.Layers != 28 || m.Model.KVHeads != 4 || m.Model.HeadDim != 128 || m.Model.Dtype != "bf16" || m.Runtime.Kind != "vllm" {
		t.Errorf("qwen2.5-7b-instruct facts: %+v %+v", m.Model, m.Runtime)
	}
	if m.Requirements.MinVRAMBytes != 20<<30 {
		t.Errorf("minVRAM: %d", m.Requirements.MinVRAMBytes)
	}
	if repo, rev, err := ParseHF(s.Model.Sources[0].URL); err != nil || repo != "Qwen/Qwen2.5-7B-Instruct" || !commitRE.MatchString(rev) {
		t.Errorf("source: %v %v %v", repo, rev, err)
	}
}

const goodSpec = `name: mine
version: 2
model:
  name: Org/Model
  sources:
    - url: https://example.invalid/m.gguf
      sha256: 0000000000000000000000000000000000000000000000000000000000000000
      dest: model/m.gguf
runtime:
  kind: llama.cpp
  artifacts:
    - name: server
      url: file:///opt/llama-server
      sha256: 1111111111111111111111111111111111111111111111111111111111111111
      dest: runtime/llama-server
requirements:
  minVRAM: 8G
`

func TestSpecErrorsPointAtLineAndField(t *testing.T) {
	if _, err := Parse("spec.yaml", []byte(goodSpec)); err != nil {
		t.Fatalf("good spec: %v", err)
	}
	cases := []struct {
		name, from, to, want string
	}{
		{"bad artefact hash", "sha256: 1111111111111111111111111111111111111111111111111111111111111111", "sha256: abc",
			"spec.yaml:14:15: runtime.artifacts[0].sha256: not 64 hex digits"},
		{"unknown field", "  kind: llama.cpp", "  kind: llama.cpp\n  colour: blue",
			"spec.yaml:11:3: runtime.colour: unknown field"},
		{"wrong type", "version: 2", "version: two", "spec.yaml:2:10: version: want a non-negative whole number"},
		{"bad size", "minVRAM: 8G", "minVRAM: 8 gigs", "spec.yaml:17:12: requirements.minVRAM: size"},
		{"escaping dest", "dest: model/m.gguf", "dest: ../m.gguf", "spec.yaml:8:13: model.sources[0].dest: \"../m.gguf\""},
		{"duplicate key", "version: 2", "version: 2\nversion: 3", "spec.yaml:3:1: version: written twice"},
		{"duplicate dest", "dest: runtime/llama-server", "dest: model/m.gguf", "runtime.artifacts[0].dest: \"model/m.gguf\" is also the destination"},
		{"bad hf", "url: https://example.invalid/m.gguf", "url: hf://not-a-repo", "model.sources[0].url"},
		{"syntax", "model:", "model: [", "spec.yaml"},
		{"alias", "  name: Org/Model", "  name: &a Org/Model\n  license: *a", "aliases are not allowed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := strings.Replace(goodSpec, c.from, c.to, 1)
			if in == goodSpec {
				t.Fatalf("case does not change the spec")
			}
			_, err := Parse("spec.yaml", []byte(in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant it to contain %q", err, c.want)
			}
			if !IsError(err) {
				t.Fatalf("not a *Error: %T", err)
			}
		})
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add([]byte(goodSpec))
	for _, n := range Names() {
		data, _ := Embedded(n)
		f.Add(data)
	}
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("name: [[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			if !IsError(err) {
				t.Fatalf("error is not a *Error: %v", err)
			}
			return
		}
		// Whatever parses must describe a safe bundle.
		_ = s.Meta()
		if s.Name == "" || s.Version == 0 || len(s.Model.Sources) == 0 {
			t.Fatalf("accepted an incomplete spec: %+v", s)
		}
	})
}
