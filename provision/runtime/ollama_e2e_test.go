package runtime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/demomodel"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// ollamaBinary finds the Ollama v0.6.5 that scripts/build-ollama.sh builds,
// or skips the test saying how to get it.
func ollamaBinary(t testing.TB) string {
	t.Helper()
	p := FindOllama()
	if p == "" {
		t.Skip("no Ollama v0.6.5 (QWA_OLLAMA, the cache or PATH): run scripts/build-ollama.sh (needs nlohmann-json3-dev) to run the CPU end-to-end tests")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Ollama: %v", err)
	}
	return p
}

// demoBundle lays out a demo bundle (the generated model and the Ollama
// binary), pins it with a manifest, checks it as install would, and copies
// the model into a fresh store. model, when not nil, replaces the model's
// bytes (to test a model that fails to load).
func demoBundle(t testing.TB, model []byte) Config {
	t.Helper()
	bin := ollamaBinary(t)
	dir := t.TempDir()
	bundle, store := filepath.Join(dir, "bundle"), filepath.Join(dir, "store")
	if model == nil {
		var b bytes.Buffer
		if err := demomodel.Write(&b); err != nil {
			t.Fatal(err)
		}
		model = b.Bytes()
	}
	meta := demomodel.Meta()
	writeFile(t, filepath.Join(bundle, filepath.FromSlash(meta.Runtime.ModelPath)), string(model), 0o644)
	exe := filepath.Join(bundle, filepath.FromSlash(OllamaEntrypoint))
	copyFile(t, bin, exe, 0o755)

	ctx := context.Background()
	m, err := manifests.Create(ctx, bundle, manifests.CreateOptions{
		Name: "demo", Version: 1, Created: time.Now(), Expires: time.Now().Add(time.Hour), Meta: meta,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.CheckFiles(ctx, bundle, m, manifests.CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(bundle, filepath.FromSlash(m.Runtime.ModelPath))
	copyFile(t, src, filepath.Join(store, filepath.FromSlash(m.Runtime.ModelPath)), 0o600)
	return Config{Bundle: bundle, Store: store, Runtime: m.Runtime, Model: m.Model, Port: freePort(t)}
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestOllamaEndToEnd serves the demo model with a real Ollama on the CPU:
// start, smoke test, a streamed chat completion, stop, nothing left.
func TestOllamaEndToEnd(t *testing.T) {
	c := demoBundle(t, nil)
	var progress bytes.Buffer
	o := Options{Config: c, ReadyTimeout: 60 * time.Second, StopTimeout: 10 * time.Second, Progress: &progress}
	start := time.Now()
	s, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready in %s; first answer %s (%d tokens: %q); streamed first token %s",
		time.Since(start).Round(time.Millisecond), s.Smoke.Total.Round(time.Millisecond),
		s.Smoke.CompletionTokens, s.Smoke.Content, s.Stream.FirstToken.Round(time.Millisecond))
	if s.Smoke.CompletionTokens != smokeMaxTokens {
		t.Errorf("%d completion tokens, want %d (the demo model never ends on its own)", s.Smoke.CompletionTokens, smokeMaxTokens)
	}
	// Greedy decoding of a fixed model and prompt is deterministic.
	again, err := Smoke(context.Background(), s.BaseURL, s.Model)
	if err != nil || again.Content != s.Smoke.Content {
		t.Errorf("second answer %q (%v), first %q", again.Content, err, s.Smoke.Content)
	}
	st, err := SmokeStream(context.Background(), s.BaseURL, s.Model)
	if err != nil || st.CompletionTokens == 0 {
		t.Errorf("streamed: %+v, %v", st, err)
	}
	if ok, _ := getOK(context.Background(), s.BaseURL, "/api/version"); !ok {
		t.Error("/api/version not answering")
	}
	pid := s.PID()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if m := GroupMembers(pid); len(m) > 0 {
		t.Errorf("process group %d still has %v", pid, m)
	}
	assertNothingLeft(t, filepath.Dir(c.Store))
	if ok, _ := getOK(context.Background(), s.BaseURL, "/"); ok {
		t.Error("the server still answers after Stop")
	}
	// The model was imported inside the store, not anywhere else.
	blobs, _ := filepath.Glob(filepath.Join(c.StateDir(KindOllama), "models", "blobs", "sha256-*"))
	if len(blobs) == 0 {
		t.Error("no Ollama blobs inside the store")
	}
}

// TestOllamaCorruptModel: a GGUF that Ollama cannot use fails the start with
// Ollama's own words, and leaves nothing running.
func TestOllamaCorruptModel(t *testing.T) {
	var b bytes.Buffer
	if err := demomodel.Write(&b); err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"not gguf":  []byte("this is not a model\n"),
		"truncated": b.Bytes()[:b.Len()/2],
	}
	for name, model := range cases {
		t.Run(name, func(t *testing.T) {
			c := demoBundle(t, model)
			_, err := Start(context.Background(), Options{Config: c, ReadyTimeout: 60 * time.Second, StopTimeout: 10 * time.Second})
			var se *StartError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a StartError", err)
			}
			t.Logf("%v", err)
			if !strings.Contains(err.Error(), "last lines of its log") {
				t.Errorf("error carries no log lines: %v", err)
			}
			assertNothingLeft(t, filepath.Dir(c.Store))
		})
	}
}

func TestOllamaPortTaken(t *testing.T) {
	c := demoBundle(t, nil)
	s, err := Start(context.Background(), Options{Config: c, ReadyTimeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	c2 := demoBundle(t, nil)
	c2.Port = c.Port
	if _, err := Start(context.Background(), Options{Config: c2}); !errors.Is(err, ErrPortInUse) {
		t.Errorf("err = %v, want ErrPortInUse", err)
	}
}

// BenchmarkOllamaDemo measures the demo path on this machine's CPU: the time
// from launch to ready (import, load, both smoke tests) once, then the
// latency of one 8-token chat completion per iteration, and the streamed
// first-token latency. One op is one plain and one streamed completion.
func BenchmarkOllamaDemo(b *testing.B) {
	c := demoBundle(b, nil)
	start := time.Now()
	s, err := Start(context.Background(), Options{Config: c, ReadyTimeout: 60 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	ready := time.Since(start)
	var first, answer time.Duration
	n := 0
	for b.Loop() {
		res, err := Smoke(context.Background(), s.BaseURL, s.Model)
		if err != nil {
			b.Fatal(err)
		}
		answer += res.Total
		st, err := SmokeStream(context.Background(), s.BaseURL, s.Model)
		if err != nil {
			b.Fatal(err)
		}
		first += st.FirstToken
		n++
	}
	b.ReportMetric(float64(ready.Milliseconds()), "ms-to-ready")
	b.ReportMetric(float64(answer.Microseconds())/float64(n)/1000, "ms-answer")
	b.ReportMetric(float64(first.Microseconds())/float64(n)/1000, "ms-first-token")
}
