package kb

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/demomodel"
)

// TestDenseOllama embeds chunks and queries through a real Ollama v0.6.5
// serving the generated tiny qwen2 model on loopback, through both of its
// embedding APIs. The model's vectors are deterministic but meaningless
// (the last token's hidden state of random weights), so this proves the
// plumbing and the access filter, not retrieval quality.
func TestDenseOllama(t *testing.T) {
	bin := os.Getenv("QWA_OLLAMA")
	if bin == "" {
		home, _ := os.UserHomeDir()
		bin = filepath.Join(home, ".cache", "qwen-appliance", "ollama-v0.6.5", "bin", "ollama")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skip("no Ollama v0.6.5 (QWA_OLLAMA or the cache): run scripts/build-ollama.sh to run it")
	}
	dir := t.TempDir()
	model := filepath.Join(dir, "demo.gguf")
	f, err := os.Create(model)
	if err != nil {
		t.Fatal(err)
	}
	if err := demomodel.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.WriteFile(filepath.Join(dir, "Modelfile"), []byte("FROM "+model+"\n"), 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := l.Addr().String()
	l.Close()
	env := append(os.Environ(), "OLLAMA_HOST="+host, "OLLAMA_MODELS="+filepath.Join(dir, "models"), "HOME="+dir, "OLLAMA_NOPRUNE=1")
	serve := exec.Command(bin, "serve")
	serve.Env, serve.Dir = env, dir
	logf, _ := os.Create(filepath.Join(dir, "serve.log"))
	serve.Stdout, serve.Stderr = logf, logf
	// A group of its own, killed whole: serve starts runner processes.
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-serve.Process.Pid, syscall.SIGKILL)
		serve.Wait()
		logf.Close()
	})
	for i := 0; ; i++ {
		if resp, err := http.Get("http://" + host + "/"); err == nil {
			resp.Body.Close()
			break
		}
		if i == 300 {
			b, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
			t.Fatalf("ollama serve did not answer: %s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	create := exec.CommandContext(ctx, bin, "create", demomodel.ServedName, "-f", filepath.Join(dir, "Modelfile"))
	create.Env, create.Dir = env, dir
	if out, err := create.CombinedOutput(); err != nil {
		t.Fatalf("ollama create: %v: %s", err, out)
	}

	native := &Embedder{URL: "http://" + host + "/api/embed", Model: demomodel.ServedName}
	openai := &Embedder{URL: "http://" + host + "/v1/embeddings", Model: demomodel.ServedName}
	k := denseKB(t, true)
	n, err := k.EmbedChunks(ctx, native, nil)
	if err != nil || n != 4 {
		t.Fatalf("embedded %d: %v", n, err)
	}
	var dims int
	k.db.QueryRow(`SELECT length(vec) / 4 FROM embeddings LIMIT 1`).Scan(&dims)
	a, err := native.Embed(ctx, []string{"员工每年享有十五天带薪年假。"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := openai.Embed(ctx, []string{"员工每年享有十五天带薪年假。"})
	if err != nil {
		t.Fatal(err)
	}
	var cos float64
	for i := range a[0] {
		cos += float64(a[0][i]) * float64(b[0][i])
	}
	t.Logf("%d dimensions; /api/embed and /v1/embeddings agree to cosine %.6f", dims, cos)
	if dims != len(a[0]) || cos < 0.999 {
		t.Fatalf("stored %d dimensions, query %d; cosine %v", dims, len(a[0]), cos)
	}
	for _, e := range []*Embedder{native, openai} {
		hits, err := k.Search(ctx, Query{Text: "年假有几天", Caller: Caller{}, K: 10, Dense: e})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != 3 {
			t.Errorf("%s: %d hits, want the 3 readable chunks", e.URL, len(hits))
		}
		for _, h := range hits {
			if strings.Contains(h.Text, "CANARY") {
				t.Fatalf("%s: unreadable chunk returned", e.URL)
			}
		}
	}
}
