package bundles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/bundles/demomodel"
	"github.com/qwen-appliance/qwen-appliance/bundles/fetch"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// countingHub answers nothing useful and counts every request: a refusal
// "before contacting any hub" leaves it at zero.
func countingHub(t *testing.T) (*fetch.Hub, *atomic.Int32) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		http.Error(w, "the test hub must not be asked", http.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	return &fetch.Hub{Endpoint: srv.URL}, &n
}

func TestCreateRefusesSpecWithoutFactsBeforeHub(t *testing.T) {
	hub, n := countingHub(t)
	spec := bareSpec(t, fmt.Sprintf(`name: nofacts
version: 1
model:
  name: Org/Model
  sources:
    - url: hf://Org/Model@%s
      include: ["*.safetensors"]
`, testCommit))
	out := filepath.Join(t.TempDir(), "b")
	_, err := Create(context.Background(), spec, CreateOptions{Out: out, Key: testKey(t), Hub: hub})
	var mf *MissingFactsError
	if !errors.As(err, &mf) || !errors.Is(err, ErrInput) {
		t.Fatalf("err = %v, want a MissingFactsError matching ErrInput", err)
	}
	for _, f := range []string{"model.layers", "model.attentionHeads", "model.kvHeads", "model.maxContext", "model.headDim"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error does not name %s: %v", f, err)
		}
	}
	if got := n.Load(); got != 0 {
		t.Errorf("the hub was asked %d times", got)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("out exists: %v", err)
	}
}

func TestCreateRequiredArtifactBeforeHub(t *testing.T) {
	hub, n := countingHub(t)
	text := fmt.Sprintf(`name: art
version: 1
model:
  name: Org/Model
  sources:
    - url: hf://Org/Model@%s
runtime:
  kind: vllm
  artifacts:
    - name: vllm
      url: ""
      dest: runtime/vllm.tar
`, testCommit)
	for name, arts := range map[string]map[string]string{
		"missing": nil,
		"unknown": {"vlm": "file:///x"},
		"bad pin": {"vllm": "file:///x#sha256=abc"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Create(context.Background(), specFor(t, text), CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t), Hub: hub, Artifacts: arts})
			if !errors.Is(err, ErrInput) {
				t.Fatalf("err = %v, want ErrInput", err)
			}
			if !strings.Contains(err.Error(), "vl") {
				t.Errorf("error does not name the artefact: %v", err)
			}
			if got := n.Load(); got != 0 {
				t.Errorf("the hub was asked %d times", got)
			}
		})
	}
}

// TestCreateFactsFromGGUF: a GGUF model with no facts in the spec gets them
// from its header.
func TestCreateFactsFromGGUF(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	if err := demomodel.Write(&b); err != nil {
		t.Fatal(err)
	}
	gguf := filepath.Join(dir, "m.gguf")
	if err := os.WriteFile(gguf, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := bareSpec(t, fmt.Sprintf("name: g\nversion: 1\nmodel:\n  name: x\n  sources:\n    - url: file://%s\n      sha256: %s\n      dest: model/m.gguf\nserving:\n  modelPath: model/m.gguf\n", gguf, hexSum(b.Bytes())))
	key := testKey(t)
	out := filepath.Join(dir, "b")
	if _, err := Create(context.Background(), spec, CreateOptions{Out: out, Key: key}); err != nil {
		t.Fatal(err)
	}
	s, err := manifests.Verifier{Trusted: []manifests.PublicKey{key.Public()}}.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	m := s.Manifest.Model
	want := manifests.Model{Name: "x", Architecture: "qwen2", Format: "gguf", Layers: demomodel.Blocks, AttentionHeads: demomodel.Heads,
		KVHeads: demomodel.KVHeads, HeadDim: demomodel.HeadDim, HiddenSize: demomodel.Embedding, MaxContext: demomodel.Context,
		WeightsBytes: int64(b.Len())}
	if m != want {
		t.Errorf("model facts\n got %+v\nwant %+v", m, want)
	}
}

// TestCreateFactsStillMissing: a config.json that lacks the facts is read,
// and the bundle is refused after the download, with nothing signed.
func TestCreateFactsStillMissing(t *testing.T) {
	srv := hubServer(t, map[string][]byte{"config.json": []byte(`{"num_hidden_layers": 4}`), "w.safetensors": []byte("weights")}, nil)
	spec := bareSpec(t, fmt.Sprintf("name: half\nversion: 1\nmodel:\n  name: Org/Model\n  sources:\n    - url: hf://Org/Model@%s\n", testCommit))
	out := filepath.Join(t.TempDir(), "b")
	_, err := Create(context.Background(), spec, CreateOptions{Out: out, Key: testKey(t), Hub: &fetch.Hub{Endpoint: srv.URL}})
	var mf *MissingFactsError
	if !errors.As(err, &mf) {
		t.Fatalf("err = %v, want a MissingFactsError", err)
	}
	if strings.Contains(err.Error(), "model.layers") || !strings.Contains(err.Error(), "model.attentionHeads") || !strings.Contains(err.Error(), "model/config.json") {
		t.Errorf("error: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("out exists: %v", err)
	}
}

func TestFactsFromConfig(t *testing.T) {
	m, err := factsFromConfig([]byte(`{"num_hidden_layers":2,"num_attention_heads":8,"hidden_size":512,"max_position_embeddings":4096,"torch_dtype":"float16"}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Layers != 2 || m.AttentionHeads != 8 || m.KVHeads != 8 || m.HiddenSize != 512 || m.MaxContext != 4096 || m.Dtype != "f16" {
		t.Errorf("%+v", m)
	}
	if _, err := factsFromConfig([]byte(`{"num_hidden_layers":"two"}`)); err == nil {
		t.Error("a string layer count was accepted")
	}
	m, _ = factsFromConfig([]byte(`{"num_hidden_layers":-3}`))
	if len(missingFacts(m, false)) == 0 || m.Layers != 0 {
		t.Errorf("negative layers: %+v", m)
	}
}

func FuzzFactsFromConfig(f *testing.F) {
	f.Add([]byte(`{"model_type":"qwen2","num_hidden_layers":28,"num_attention_heads":28,"num_key_value_heads":4,"hidden_size":3584,"max_position_embeddings":32768,"torch_dtype":"bfloat16"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"num_key_value_heads":0,"num_attention_heads":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := factsFromConfig(data)
		if err != nil {
			return
		}
		if m.Layers < 0 || m.AttentionHeads < 0 || m.KVHeads < 0 || m.HeadDim < 0 || m.MaxContext < 0 {
			t.Errorf("negative fact: %+v", m)
		}
		missingFacts(m, true) // must not panic (a zero KV head count is no divisor)
	})
}

func FuzzFactsFromGGUF(f *testing.F) {
	var b bytes.Buffer
	if err := demomodel.Write(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes()[:4096])
	f.Add([]byte("GGUF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := factsFromGGUF(bytes.NewReader(data))
		if err != nil {
			return
		}
		if m.Layers < 0 || m.AttentionHeads < 0 || m.KVHeads < 0 || m.HeadDim < 0 || m.MaxContext < 0 {
			t.Errorf("negative fact: %+v", m)
		}
		missingFacts(m, true)
	})
}
