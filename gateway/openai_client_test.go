package gateway

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestOpenAINodeClient runs the official openai npm package (installed into
// gateway/js by "npm ci", as .ci/run does) against the gateway, streamed and
// not. It skips when Node.js or the package is missing.
func TestOpenAINodeClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the OpenAI client test needs Node.js 20")
	}
	if _, err := os.Stat(filepath.Join("js", "node_modules", "openai", "package.json")); err != nil {
		t.Skip("the openai npm package is not installed: run (cd gateway/js && npm ci --no-audit --no-fund)")
	}
	h := newHarness(t, nil)
	cmd := exec.Command(node, "client.mjs")
	cmd.Dir = "js"
	cmd.Env = append(os.Environ(), "GATEWAY_URL="+h.url+"/v1", "GATEWAY_TOKEN="+h.tok["user"])
	cmd.Stderr = os.Stderr
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("the node client did not finish in 60s")
	}
	if err != nil {
		t.Fatalf("node client.mjs: %v\n%s", err, out)
	}
	var res struct {
		Stream    string `json:"stream"`
		AuthError string `json:"authError"`
		CapError  string `json:"capError"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("client output %s: %v", out, err)
	}
	if res.Stream == "" || res.AuthError != "invalid_api_key" || res.CapError != "invalid_value" {
		t.Fatalf("client results %s", out)
	}
	t.Logf("openai client: %s", out)
}
