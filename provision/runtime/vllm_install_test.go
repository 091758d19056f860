package runtime

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// fakeAPIServer stands in for vllm.entrypoints.openai.api_server: it takes
// vLLM's flags, records its environment, and answers readiness, the model
// list and chat completions (streamed and not) as vLLM does.
const fakeAPIServer = `import argparse, json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
p = argparse.ArgumentParser()
for f in ("--model", "--served-model-name", "--host"):
    p.add_argument(f)
p.add_argument("--port", type=int)
a, _ = p.parse_known_args()
with open("fake-vllm.json", "w") as f:
    json.dump({"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "argv": sys.argv[1:]}, f)
class H(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def send(self, code, body, ctype="application/json"):
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_GET(self):
        if self.path == "/health":
            return self.send(200, "")
        if self.path == "/v1/models":
            return self.send(200, json.dumps({"object": "list", "data": [{"id": a.served_model_name, "object": "model"}]}))
        self.send(404, "{}")
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if self.path != "/v1/chat/completions":
            return self.send(404, "{}")
        if req.get("stream"):
            chunks = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("rea", "dy")]
            return self.send(200, "".join("data: %s\n\n" % json.dumps(c) for c in chunks) + "data: [DONE]\n\n", "text/event-stream")
        self.send(200, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "ready"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}))
print("fake vllm: listening", flush=True)
ThreadingHTTPServer((a.host, a.port), H).serve_forever()
`

// fakeWheelhouse is a wheelhouse in the format bundles carry (a tar of
// wheels and a hash-pinned requirements.txt) whose "vllm" is fakeAPIServer.
func fakeWheelhouse(t *testing.T) []byte {
	t.Helper()
	files := map[string]string{
		"vllm/__init__.py":                      "",
		"vllm/entrypoints/__init__.py":          "",
		"vllm/entrypoints/openai/__init__.py":   "",
		"vllm/entrypoints/openai/api_server.py": fakeAPIServer,
		"vllm-0.11.0.dist-info/METADATA":        "Metadata-Version: 2.1\nName: vllm\nVersion: 0.11.0\n",
		"vllm-0.11.0.dist-info/WHEEL":           "Wheel-Version: 1.0\nGenerator: qwen-appliance-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
		"vllm-0.11.0.dist-info/top_level.txt":   "vllm\n",
	}
	var whl bytes.Buffer
	zw := zip.NewWriter(&whl)
	var record strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		w, _ := zw.Create(name)
		w.Write([]byte(files[name]))
		sum := sha256.Sum256([]byte(files[name]))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", name, base64.RawURLEncoding.EncodeToString(sum[:]), len(files[name]))
	}
	record.WriteString("vllm-0.11.0.dist-info/RECORD,,\n")
	w, _ := zw.Create("vllm-0.11.0.dist-info/RECORD")
	w.Write([]byte(record.String()))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(whl.Bytes())
	req := "vllm==0.11.0 --hash=sha256:" + hex.EncodeToString(sum[:]) + "\n"
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{"vllm-0.11.0-py3-none-any.whl", whl.Bytes()}, {"requirements.txt", []byte(req)}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(0, 0)})
		tw.Write(f.data)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// TestVLLMInstallsFromWheelhouse starts the vLLM adapter on a bundle whose
// wheelhouse holds a stand-in vLLM: Start makes the virtual environment
// from the wheelhouse offline (pip --no-index --require-hashes), then serves
// with only the planned GPUs visible; a second Start reuses the environment.
func TestVLLMInstallsFromWheelhouse(t *testing.T) {
	if exec.Command("/usr/bin/python3", "-c", "import ensurepip, venv").Run() != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI needs /usr/bin/python3 with venv and ensurepip (apt-get install python3-venv)")
		}
		t.Skip("needs /usr/bin/python3 with venv (apt-get install python3-venv)")
	}
	dir := t.TempDir()
	bundle, store := filepath.Join(dir, "bundle"), filepath.Join(dir, "store")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(bundle, "runtime"), 0o755))
	must(os.WriteFile(filepath.Join(bundle, VLLMWheelhouse), fakeWheelhouse(t), 0o644))
	must(os.MkdirAll(filepath.Join(store, "model", "Qwen2.5-7B-Instruct"), 0o755))
	gpus := []string{"GPU-0a1b2c3d-0000-4000-8000-000000000000", "GPU-0a1b2c3d-0000-4000-8000-000000000001"}
	c := Config{Bundle: bundle, Store: store, Port: freePort(t),
		Runtime: manifests.Runtime{Kind: KindVLLM, Version: "0.11.0", Devices: []string{"cuda"},
			ModelPath: "model/Qwen2.5-7B-Instruct", ServedModelName: "qwen2.5-7b-instruct", DefaultContext: 4096},
		Model: manifests.Model{Dtype: "bf16"}, TensorParallel: 2, GPUs: gpus}
	o := quickOptions(c)
	o.ReadyTimeout = 2 * time.Minute
	for round := 1; round <= 2; round++ {
		s, err := Start(context.Background(), o)
		if err != nil {
			t.Fatalf("start %d: %v", round, err)
		}
		if s.Smoke.Content != "ready" || s.Stream.Content != "ready" {
			t.Errorf("smoke %+v stream %+v", s.Smoke, s.Stream)
		}
		must(s.Stop())
		log, _ := os.ReadFile(s.LogFile)
		if n := strings.Count(string(log), "install: /usr/bin/python3 -m venv"); n != 1 {
			t.Errorf("after start %d the log shows %d venv installs, want 1:\n%s", round, n, log)
		}
	}
	raw, err := os.ReadFile(filepath.Join(c.StateDir(KindVLLM), "fake-vllm.json"))
	must(err)
	var seen struct {
		CUDAVisibleDevices string   `json:"CUDA_VISIBLE_DEVICES"`
		Argv               []string `json:"argv"`
	}
	must(json.Unmarshal(raw, &seen))
	if seen.CUDAVisibleDevices != strings.Join(gpus, ",") || !strings.Contains(strings.Join(seen.Argv, " "), "--tensor-parallel-size 2") {
		t.Errorf("the server saw CUDA_VISIBLE_DEVICES=%q and %q", seen.CUDAVisibleDevices, seen.Argv)
	}
}
