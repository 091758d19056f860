package gateway

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/kb"
)

// TestOpenAINodeClientKB runs the official openai npm package against the
// knowledge-base route over TLS (baseURL .../v1/kb), streamed and not: the
// hr token's answer carries citations (in a stream, on its last chunk), the
// staff token gets the not-found answer, a token without a role a typed
// permission error. It skips when Node.js or the package is missing.
func TestOpenAINodeClientKB(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: the OpenAI client test needs Node.js 20")
	}
	if _, err := os.Stat(filepath.Join("js", "node_modules", "openai", "package.json")); err != nil {
		t.Skip("the openai npm package is not installed: run (cd gateway/js && npm ci --no-audit --no-fund)")
	}
	dir, _ := tlsDir(t)
	f := newKB(t, "")
	h := kbHarness(t, f, withTLS(dir))
	out := runNodeKB(t, node, map[string]string{
		"GATEWAY_URL": h.url + "/v1/kb", "NODE_EXTRA_CA_CERTS": filepath.Join(dir, certs.CAFile),
		"KB_MODEL": "qwen", "KB_QUESTION": kbQuestion, "KB_DOC_ID": strconv.FormatInt(f.hrDoc.DocID, 10),
		"HR_TOKEN": h.tok["hr"], "STAFF_TOKEN": h.tok["staff"], "PLAIN_TOKEN": h.tok["user"], "KB_NOT_FOUND": kb.DefaultNotFoundZH,
	})
	var res struct {
		PlainError string `json:"plainError"`
	}
	if err := json.Unmarshal(out, &res); err != nil || res.PlainError != "kb_access_required" {
		t.Fatalf("client results %s (%v)", out, err)
	}
}

// runNodeKB runs js/kb.mjs with env and returns its output line.
func runNodeKB(t *testing.T, node string, env map[string]string) []byte {
	t.Helper()
	cmd := exec.Command(node, "kb.mjs")
	cmd.Dir = "js"
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("the node client did not finish in 120s")
	}
	if err != nil {
		t.Fatalf("node kb.mjs: %v\n%s", err, out)
	}
	t.Logf("openai client on /v1/kb: %s", out)
	return out
}
