package bundles

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/fetch"
	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

const testCommit = "0123456789abcdef0123456789abcdef01234567"

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hubServer serves one repository at testCommit, and plain files under
// /files/, over loopback. lie replaces the advertised SHA-256 of a file.
func hubServer(t *testing.T, files map[string][]byte, lie map[string]string) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/models/Org/Model/revision/", func(w http.ResponseWriter, r *http.Request) {
		var sibs []map[string]any
		for p, b := range files {
			sum := hexSum(b)
			if l, ok := lie[p]; ok {
				sum = l
			}
			sibs = append(sibs, map[string]any{"rfilename": p, "size": len(b), "lfs": map[string]any{"sha256": sum, "size": len(b)}})
		}
		json.NewEncoder(w).Encode(map[string]any{"sha": testCommit, "siblings": sibs})
	})
	mux.HandleFunc("/Org/Model/resolve/"+testCommit+"/", func(w http.ResponseWriter, r *http.Request) {
		p := strings.TrimPrefix(r.URL.Path, "/Org/Model/resolve/"+testCommit+"/")
		b, ok := files[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(b))
	})
	mux.HandleFunc("/files/", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "f", time.Time{}, strings.NewReader("runtime binary bytes"))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func testKey(t *testing.T) manifests.PrivateKey {
	k, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// specFor parses text and gives the spec the model facts preflight needs
// where it has none, as a real spec would (facts_test.go tests without).
func specFor(t *testing.T, text string) *specs.Spec {
	s := bareSpec(t, text)
	m := &s.Model
	if m.Layers == 0 {
		m.Layers, m.AttentionHeads, m.KVHeads, m.HeadDim, m.MaxContext = 2, 4, 2, 16, 2048
	}
	return s
}

// bareSpec parses text as it is.
func bareSpec(t *testing.T, text string) *specs.Spec {
	t.Helper()
	s, err := specs.Parse("test.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateFromHubHTTPAndFile(t *testing.T) {
	files := map[string][]byte{
		"config.json":       []byte(`{"model_type":"qwen2","num_hidden_layers":28,"num_attention_heads":28,"num_key_value_heads":4,"hidden_size":3584,"max_position_embeddings":32768,"torch_dtype":"bfloat16","rope_theta":1e6}`),
		"model.safetensors": bytes.Repeat([]byte("weights!"), 300000),
		"README.md":         []byte("not included"),
	}
	srv := hubServer(t, files, nil)
	dir := t.TempDir()
	tool := filepath.Join(dir, "tool.bin")
	os.WriteFile(tool, []byte("a local tool"), 0o755)
	spec := specFor(t, fmt.Sprintf(`name: test
version: 3
model:
  name: Org/Model
  license: apache-2.0
  layers: 2
  sources:
    - url: hf://Org/Model@%s
      include: ["*.json", "*.safetensors"]
      files:
        model.safetensors: %s
runtime:
  kind: llama.cpp
  artifacts:
    - name: server
      url: %s/files/server
      sha256: %s
      dest: runtime/server
      mode: "0755"
    - name: tool
      url: ""
      dest: runtime/tool.bin
`, testCommit, hexSum(files["model.safetensors"]), srv.URL, hexSum([]byte("runtime binary bytes"))))
	key := testKey(t)
	out := filepath.Join(dir, "bundle")
	created := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	res, err := Create(context.Background(), spec, CreateOptions{
		Out: out, Key: key, Hub: &fetch.Hub{Endpoint: srv.URL}, Now: func() time.Time { return created },
		Artifacts: map[string]string{"tool": "file://" + tool + "#sha256=" + hexSum([]byte("a local tool"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision != testCommit || res.Files != 5 {
		t.Fatalf("result: %+v", res)
	}
	s, err := manifests.Verifier{Trusted: []manifests.PublicKey{key.Public()}, Now: func() time.Time { return created }}.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.CheckFiles(context.Background(), out, s.Manifest, manifests.CheckOptions{}); err != nil {
		t.Fatalf("the manifest built from download hashes does not match the files: %v", err)
	}
	for _, p := range []string{"model/config.json", "model/model.safetensors", "runtime/server", "runtime/tool.bin", SBOMFile} {
		if _, ok := s.Manifest.Lookup(p); !ok {
			t.Errorf("manifest lacks %s", p)
		}
	}
	if f, _ := s.Manifest.Lookup("runtime/server"); f.Mode != "0755" {
		t.Errorf("runtime/server mode %s", f.Mode)
	}
	if s.Manifest.Provenance.Revision != testCommit || s.Manifest.Model.Layers != 2 {
		t.Errorf("provenance/model: %+v %+v", s.Manifest.Provenance, s.Manifest.Model)
	}
	// The facts the spec left out came from config.json; the spec's own
	// (layers: 2) won over it. The weights are the model files' bytes.
	m := s.Manifest.Model
	cfg, _ := s.Manifest.Lookup("model/config.json")
	st, _ := s.Manifest.Lookup("model/model.safetensors")
	if m.AttentionHeads != 28 || m.KVHeads != 4 || m.HeadDim != 128 || m.HiddenSize != 3584 || m.MaxContext != 32768 ||
		m.Dtype != "bf16" || m.Architecture != "qwen2" || m.WeightsBytes != cfg.Size+st.Size {
		t.Errorf("model facts from config.json: %+v", m)
	}
	sbom, _ := os.ReadFile(filepath.Join(out, SBOMFile))
	for _, want := range []string{`"bomFormat": "CycloneDX"`, hexSum(files["model.safetensors"]), testCommit, `"id": "Apache-2.0"`, "machine-learning-model", "runtime/tool.bin"} {
		if !bytes.Contains(sbom, []byte(want)) {
			t.Errorf("SBOM lacks %s", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".bundle.partial")); !os.IsNotExist(err) {
		t.Error("the default cache was left behind")
	}
}

func TestCreateRefusesWrongHashAndSignsNothing(t *testing.T) {
	files := map[string][]byte{"model.safetensors": []byte("real bytes")}
	srv := hubServer(t, files, map[string]string{"model.safetensors": strings.Repeat("e", 64)})
	spec := specFor(t, fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: Org/Model\n  sources:\n    - url: hf://Org/Model@%s\n", testCommit))
	out := filepath.Join(t.TempDir(), "b")
	_, err := Create(context.Background(), spec, CreateOptions{Out: out, Key: testKey(t), Hub: &fetch.Hub{Endpoint: srv.URL}})
	var me *fetch.MismatchError
	if !errors.As(err, &me) || me.Name != "model/model.safetensors" || !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("want a mismatch naming model/model.safetensors, got %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatal("a failed create left the output directory")
	}
}

func TestCreateSpecPinDisagreesWithHub(t *testing.T) {
	files := map[string][]byte{"w.bin": []byte("x")}
	srv := hubServer(t, files, nil)
	spec := specFor(t, fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: Org/Model\n  sources:\n    - url: hf://Org/Model@%s\n      files:\n        w.bin: %s\n", testCommit, strings.Repeat("a", 64)))
	_, err := Create(context.Background(), spec, CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t), Hub: &fetch.Hub{Endpoint: srv.URL}})
	if !errors.Is(err, manifests.ErrVerification) || !strings.Contains(err.Error(), "the spec pins") {
		t.Fatalf("want a pin disagreement, got %v", err)
	}
}

func TestCreateUnpinnedNeedsPermission(t *testing.T) {
	srv := hubServer(t, nil, nil)
	text := fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: x\n  sources:\n    - url: %s/files/m.bin\n      dest: model/m.bin\n", srv.URL)
	_, err := Create(context.Background(), specFor(t, text), CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t)})
	if err == nil || !strings.Contains(err.Error(), "test.yaml:6:") || !strings.Contains(err.Error(), "no sha256 pin") {
		t.Fatalf("want a refusal naming the spec line, got %v", err)
	}
	res, err := Create(context.Background(), specFor(t, text), CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t), AllowUnpinned: true})
	if err != nil || len(res.Unpinned) != 1 {
		t.Fatalf("with --allow-unpinned: %v %+v", err, res)
	}
}

func TestCreateDemoIsDeterministic(t *testing.T) {
	spec, err := specs.Load("demo")
	if err != nil {
		t.Fatal(err)
	}
	key := testKey(t)
	now := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	var manifestsSeen [][]byte
	for i := range 2 {
		out := filepath.Join(t.TempDir(), fmt.Sprint("b", i))
		res, err := Create(context.Background(), spec, CreateOptions{Out: out, Key: key, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Skipped) != 1 || res.Skipped[0] != "ollama" {
			t.Fatalf("skipped: %v", res.Skipped)
		}
		m := res.Manifest
		if m.Model.Architecture != "qwen2" || m.Runtime.Kind != "ollama" || m.Model.Layers == 0 || m.Runtime.ModelPath != "model/demo.gguf" {
			t.Fatalf("demo facts: %+v %+v", m.Model, m.Runtime)
		}
		data, _ := os.ReadFile(filepath.Join(out, manifests.ManifestFile))
		manifestsSeen = append(manifestsSeen, data)
	}
	if !bytes.Equal(manifestsSeen[0], manifestsSeen[1]) {
		t.Fatal("two demo bundles differ")
	}
}

func TestCreateRefusesNonEmptyOut(t *testing.T) {
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "x"), nil, 0o644)
	spec, _ := specs.Load("demo")
	if _, err := Create(context.Background(), spec, CreateOptions{Out: out, Key: testKey(t)}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("got %v", err)
	}
}

func TestCreateUnknownArtifactOverride(t *testing.T) {
	spec, _ := specs.Load("demo")
	_, err := Create(context.Background(), spec, CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t), Artifacts: map[string]string{"olama": "file:///x"}})
	if err == nil || !strings.Contains(err.Error(), "it has: ollama") {
		t.Fatalf("got %v", err)
	}
}

// TestCreateGitSource fetches a local git repository through go-getter,
// pinned by commit, and checks that every file of the checkout (not .git)
// is in the manifest.
func TestCreateGitSource(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	repo := filepath.Join(t.TempDir(), "repo")
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = repo
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	os.MkdirAll(filepath.Join(repo, "tok"), 0o755)
	os.WriteFile(filepath.Join(repo, "config.json"), []byte(`{"layers":2}`), 0o644)
	os.WriteFile(filepath.Join(repo, "tok", "vocab.txt"), []byte("a\nb\n"), 0o644)
	git("init", "-q")
	git("add", ".")
	git("commit", "-q", "-m", "model")
	commit := git("rev-parse", "HEAD")

	text := fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: x\n  sources:\n    - url: git::file://%s?ref=%s\n      dest: model\n", repo, commit)
	res, err := Create(context.Background(), specFor(t, text), CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range res.Manifest.Files {
		paths = append(paths, f.Path)
	}
	if got := strings.Join(paths, ","); got != "model/config.json,model/tok/vocab.txt,sbom.cdx.json" {
		t.Fatalf("files: %s", got)
	}
	if err := manifests.CheckFiles(context.Background(), res.Dir, res.Manifest, manifests.CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	sbom, _ := os.ReadFile(filepath.Join(res.Dir, SBOMFile))
	if !bytes.Contains(sbom, []byte(commit)) {
		t.Error("the SBOM lacks the commit")
	}

	unpinned := strings.Replace(text, "?ref="+commit, "?ref=main", 1)
	_, err = Create(context.Background(), specFor(t, unpinned), CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t)})
	if err == nil || !strings.Contains(err.Error(), "not pinned by ?ref=<40-hex commit>") {
		t.Fatalf("unpinned git source: %v", err)
	}
}

// TestCreateGoGetterFileSource fetches through go-getter (its file getter,
// forced with "file::") and checks the pin.
func TestCreateGoGetterFileSource(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "weights.bin")
	data := bytes.Repeat([]byte{7}, 100000)
	os.WriteFile(src, data, 0o644)
	text := fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: x\n  sources:\n    - url: file::%s\n      dest: model/w.bin\n      sha256: %s\n", src, hexSum(data))
	res, err := Create(context.Background(), specFor(t, text), CreateOptions{Out: filepath.Join(dir, "b"), Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	if f, ok := res.Manifest.Lookup("model/w.bin"); !ok || f.SHA256 != hexSum(data) {
		t.Fatalf("go-getter file: %+v", f)
	}
	bad := strings.Replace(text, hexSum(data), strings.Repeat("b", 64), 1)
	_, err = Create(context.Background(), specFor(t, bad), CreateOptions{Out: filepath.Join(dir, "b2"), Key: testKey(t)})
	if !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("want a mismatch, got %v", err)
	}
}

// TestCreateResumesAfterFailure: a create that fails part-way keeps the
// finished and partial downloads in the cache; running it again fetches only
// what is missing.
func TestCreateResumesAfterFailure(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	small := []byte("small file")
	var mu sync.Mutex
	served := map[string]int64{}
	failSmall := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := failSmall && r.URL.Path == "/small"
		mu.Unlock()
		if fail {
			http.Error(w, "gone", http.StatusNotFound)
			return
		}
		data := big
		if r.URL.Path == "/small" {
			data = small
		}
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "f", time.Time{}, bytes.NewReader(data))
		mu.Lock()
		served[r.URL.Path] += cw.n
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	text := fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: x\n  sources:\n    - url: %s/big\n      sha256: %s\n      dest: model/big\n    - url: %s/small\n      sha256: %s\n      dest: model/small\n",
		srv.URL, hexSum(big), srv.URL, hexSum(small))
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	opts := CreateOptions{Out: filepath.Join(dir, "b"), Cache: cache, Key: testKey(t), Retries: 1, Backoff: time.Millisecond}
	if _, err := Create(context.Background(), specFor(t, text), opts); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("first run: want a 404, got %v", err)
	}
	if _, err := os.Stat(opts.Out); !os.IsNotExist(err) {
		t.Fatal("a failed create left --out")
	}
	mu.Lock()
	failSmall = false
	firstBig := served["/big"]
	mu.Unlock()
	if _, err := Create(context.Background(), specFor(t, text), opts); err != nil {
		t.Fatal(err)
	}
	// The second run may only ask for the range after the end (a 416 with a
	// few bytes of error text), not the file.
	if firstBig != int64(len(big)) || served["/big"]-firstBig > 1024 {
		t.Fatalf("the big file was fetched again: %d bytes served in all, %d in the first run", served["/big"], firstBig)
	}
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func TestHubFromEnvironment(t *testing.T) {
	srv := hubServer(t, map[string][]byte{"w.bin": []byte("weights")}, nil)
	t.Setenv("HF_ENDPOINT", srv.URL)
	t.Setenv("HF_TOKEN", "")
	spec := specFor(t, fmt.Sprintf("name: t\nversion: 1\nmodel:\n  name: Org/Model\n  sources:\n    - url: hf://Org/Model@%s\n", testCommit))
	res, err := Create(context.Background(), spec, CreateOptions{Out: filepath.Join(t.TempDir(), "b"), Key: testKey(t)})
	if err != nil || res.Revision != testCommit {
		t.Fatalf("HF_ENDPOINT not used: %v", err)
	}
}
