// Package e2e runs the gateway in front of a real inference server: Ollama
// serving the generated demo model on the CPU, started by provision/runtime
// as install would. It skips when Ollama v0.6.5 has not been built
// (scripts/build-ollama.sh).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/demomodel"
	"github.com/qwen-appliance/qwen-appliance/gateway"
	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/runtime"
)

func ollamaBinary(t *testing.T) string {
	p := runtime.FindOllama()
	if p == "" {
		t.Skip("no Ollama v0.6.5: run scripts/build-ollama.sh")
	}
	return p
}

// startOllama lays out a demo bundle and starts Ollama on it.
func startOllama(t *testing.T) *runtime.Server {
	bin := ollamaBinary(t)
	dir := t.TempDir()
	bundle, store := filepath.Join(dir, "bundle"), filepath.Join(dir, "store")
	var model bytes.Buffer
	if err := demomodel.Write(&model); err != nil {
		t.Fatal(err)
	}
	meta := demomodel.Meta()
	put := func(path string, data []byte, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, mode); err != nil {
			t.Fatal(err)
		}
	}
	put(filepath.Join(bundle, filepath.FromSlash(meta.Runtime.ModelPath)), model.Bytes(), 0o644)
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	put(filepath.Join(bundle, filepath.FromSlash(runtime.OllamaEntrypoint)), exe, 0o755)
	m, err := manifests.Create(context.Background(), bundle, manifests.CreateOptions{
		Name: "demo", Version: 1, Created: time.Now(), Expires: time.Now().Add(time.Hour), Meta: meta})
	if err != nil {
		t.Fatal(err)
	}
	put(filepath.Join(store, filepath.FromSlash(m.Runtime.ModelPath)), model.Bytes(), 0o600)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s, err := runtime.Start(context.Background(), runtime.Options{
		Config:       runtime.Config{Bundle: bundle, Store: store, Runtime: m.Runtime, Model: m.Model, Port: port},
		ReadyTimeout: 90 * time.Second, StopTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

// TestGatewayInFrontOfOllama: the real server's answers pass through the
// gateway, streamed and not, with usage in the audit log; Ollama's own
// unauthenticated API (/api/*, /) is not reachable through it.
func TestGatewayInFrontOfOllama(t *testing.T) {
	s := startOllama(t)
	dir := t.TempDir()
	tokFile, auditFile := filepath.Join(dir, "tokens.json"), filepath.Join(dir, "audit.log")
	tok := writeTokens(t, tokFile, tokens.CreateOptions{Name: "e2e", Role: tokens.RoleUser})[0]
	key, _ := manifests.GenerateKey(nil)
	addr, stop := startGateway(t, gateway.Options{Upstream: s.BaseURL, TokensFile: tokFile, AuditLog: auditFile, AuditKey: &key, MaxTokens: 16})
	base := "http://" + addr
	do := func(method, path, body string) (int, []byte) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	if code, body := do("GET", "/v1/models", ""); code != 200 || !strings.Contains(string(body), s.Model) {
		t.Fatalf("models: %d %s", code, body)
	}
	chat := `{"model":"` + s.Model + `","messages":[{"role":"user","content":"hello"}],"max_tokens":8}`
	code, body := do("POST", "/v1/chat/completions", chat)
	if code != 200 || !strings.Contains(string(body), `"usage"`) {
		t.Fatalf("chat: %d %s", code, body)
	}
	// Streamed, flushed through.
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(strings.Replace(chat, `"max_tokens":8`, `"max_tokens":8,"stream":true`, 1)))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: {") {
			events++
		}
	}
	resp.Body.Close()
	if events < 2 {
		t.Fatalf("streamed %d events", events)
	}
	// Ollama's native API and banner are directly reachable, never through the gateway.
	for _, p := range []string{"/api/tags", "/api/generate", "/api/pull", "/", "/api/ps"} {
		if p == "/api/tags" || p == "/" {
			direct, err := http.Get(s.BaseURL + p)
			if err != nil || direct.StatusCode != 200 {
				t.Fatalf("%s directly: %v (the check below would prove nothing)", p, err)
			}
			direct.Body.Close()
		}
		if code, body := do("GET", p, ""); code != 404 || strings.Contains(string(body), "Ollama") {
			t.Errorf("%s through the gateway: %d %s", p, code, body)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify([]string{auditFile}, audit.VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(auditFile)
	var withUsage int
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r audit.Record
		json.Unmarshal([]byte(line), &r)
		if r.Route == "/v1/chat/completions" && r.Status == 200 && r.PromptTokens > 0 && r.CompletionTokens > 0 {
			withUsage++
		}
	}
	if withUsage < 1 {
		t.Errorf("no chat request in the audit log carries Ollama's token counts (%d requests)", rep.Requests)
	}
	t.Logf("audit: %d requests, %d chat lines with token counts", rep.Requests, withUsage)
}

// TestCanonicalRequestAgainstOllama (issue 21 case 2): each body the outside
// review used to make the gateway and Ollama read one request differently
// really does so when sent to Ollama directly, and is refused by the
// gateway; the cap applies to a null or missing max_tokens.
func TestCanonicalRequestAgainstOllama(t *testing.T) {
	s := startOllama(t)
	dir := t.TempDir()
	tokFile, auditFile := filepath.Join(dir, "tokens.json"), filepath.Join(dir, "audit.log")
	secrets := writeTokens(t, tokFile, tokens.CreateOptions{Name: "e2e", Role: tokens.RoleUser},
		tokens.CreateOptions{Name: "other-only", Role: tokens.RoleUser, Models: []string{"other"}})
	tok, other := secrets[0], secrets[1]
	addr, _ := startGateway(t, gateway.Options{Upstream: s.BaseURL, TokensFile: tokFile, AuditLog: auditFile, MaxTokens: 5})
	post := func(base, token, body string) (int, []byte) {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		// A body that slips past the cap can generate for minutes: fail instead.
		resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, data
	}
	completion := func(body []byte) (model string, tokens int) {
		var r struct {
			Model string `json:"model"`
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatalf("answer %s: %v", body, err)
		}
		return r.Model, r.Usage.CompletionTokens
	}
	gw := "http://" + addr
	msgs := `"messages":[{"role":"user","content":"count to one hundred"}],"seed":1,"temperature":0`
	m := `"model":"` + s.Model + `"`

	// Ollama itself reads the case-folded key, last one winning: proof that
	// the refusals below stop a real bypass.
	code, body := post(s.BaseURL, "", `{`+m+`,`+msgs+`,"max_tokens":1,"MAX_TOKENS":12}`)
	if _, n := completion(body); code != 200 || n <= 1 {
		t.Fatalf("directly to Ollama, max_tokens 1 then MAX_TOKENS 12: %d, %d tokens (%s); the variant proves nothing here", code, n, body)
	}
	for _, c := range []struct{ token, body string }{
		{tok, `{` + m + `,` + msgs + `,"max_tokens":1,"MAX_TOKENS":40}`},
		{tok, `{` + m + `,` + msgs + `,"Max_Tokens":null}`},
		{tok, `{` + m + `,` + msgs + `,"max_tokens":1,"Max_Tokens":null}`},
		{tok, `{` + m + `,` + msgs + `,"max_tokenſ":40}`},
		{other, `{"model":"other","Model":"` + s.Model + `",` + msgs + `,"max_tokens":3}`},
	} {
		code, body := post(gw, c.token, c.body)
		if code != 400 || !strings.Contains(string(body), "ambiguous_json") {
			t.Errorf("%s: %d %s", c.body, code, body)
		}
	}
	// What the gateway accepts, Ollama serves within the cap.
	for _, b := range []string{`{` + m + `,` + msgs + `}`, `{` + m + `,` + msgs + `,"max_tokens":null}`} {
		code, body := post(gw, tok, b)
		model, n := completion(body)
		if code != 200 || n < 1 || n > 5 || model != s.Model {
			t.Errorf("%s: %d, model %q, %d tokens (cap 5): %s", b, code, model, n, body)
		}
	}
	// The allowlist holds on the parsed model.
	if code, body := post(gw, other, `{`+m+`,`+msgs+`}`); code != 403 {
		t.Errorf("token for model other asking for %s: %d %s", s.Model, code, body)
	}
}
