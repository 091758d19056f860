package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway"
	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/kb"
)

// countingProxy sits between the gateway and Ollama and counts the
// requests that reach the model.
func countingProxy(t *testing.T, target string) (string, *atomic.Int64) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			n.Add(1)
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), &n
}

// TestKBAnswersThroughOllama: the knowledge-base route over TLS in front of
// the real runtime. The hr token's answer (streamed and not) cites the HR
// document; the staff token asking the same gets the not-found answer and
// the model is not called (counted between the gateway and Ollama); the
// official openai npm client works against baseURL .../v1/kb.
func TestKBAnswersThroughOllama(t *testing.T) {
	s := startOllama(t)
	up, calls := countingProxy(t, s.BaseURL)
	dir := t.TempDir()

	kbPath := filepath.Join(dir, "kb", "kb.db")
	k, err := kb.Open(kbPath)
	if err != nil {
		t.Fatal(err)
	}
	hrText := "年假与调休制度。员工入职满一年后每年享有十五天带薪年假，年假须提前两周向人事部申请。"
	hrDoc, err := k.Put(context.Background(), kb.Document{Title: "年假制度", Source: "hr/leave.md", Format: "markdown", Class: kb.Internal,
		Allow: []kb.Principal{"role:hr"}, Raw: []byte(hrText), Sections: []kb.Section{{Heading: []string{"年假制度"}, Text: hrText}}}, kb.ChunkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}

	tokFile, auditFile := filepath.Join(dir, "tokens.json"), filepath.Join(dir, "audit.log")
	secrets := writeTokens(t, tokFile,
		tokens.CreateOptions{Name: "hr", Role: tokens.RoleUser, Roles: []string{"hr"}, Clearance: "internal"},
		tokens.CreateOptions{Name: "staff", Role: tokens.RoleUser, Roles: []string{"staff"}, Clearance: "internal"})
	tok := map[string]string{"hr": secrets[0], "staff": secrets[1]}
	tlsDir := filepath.Join(dir, "tls")
	if err := certs.Init(certs.Options{Dir: tlsDir, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	addr, stop := startGateway(t, gateway.Options{Upstream: up, TokensFile: tokFile, AuditLog: auditFile, MaxTokens: 16,
		TLSCert: filepath.Join(tlsDir, certs.CertFile), TLSKey: filepath.Join(tlsDir, certs.KeyFile),
		KB: kbPath, KBContextTokens: 2048})
	caPEM, _ := os.ReadFile(filepath.Join(tlsDir, certs.CAFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	base := "https://" + addr
	question := "年假有多少天？"
	post := func(token string, stream bool) (*http.Response, string) {
		body, _ := json.Marshal(map[string]any{"model": s.Model, "stream": stream, "max_tokens": 8,
			"messages": []map[string]string{{"role": "user", "content": question}}})
		req, _ := http.NewRequest("POST", base+"/v1/kb/chat/completions", strings.NewReader(string(body)))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp, resp.Header.Get("X-Request-Id")
	}
	type answer struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
		Citations []kb.Citation `json:"citations"`
	}
	read := func(resp *http.Response) answer {
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		var a answer
		if resp.StatusCode != 200 || json.Unmarshal(data, &a) != nil || len(a.Choices) != 1 {
			t.Fatalf("%d %s", resp.StatusCode, data)
		}
		return a
	}

	resp, hrReq := post(tok["hr"], false)
	a := read(resp)
	if len(a.Citations) == 0 || a.Citations[0].Doc != hrDoc.DocID || a.Citations[0].SHA256 != hrDoc.SHA256 || a.Citations[0].Title != "年假制度" {
		t.Fatalf("hr citations %+v", a.Citations)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d upstream requests for the hr answer", calls.Load())
	}
	resp, staffReq := post(tok["staff"], false)
	if a := read(resp); a.Choices[0].Message.Content != kb.DefaultNotFoundZH || len(a.Citations) != 0 {
		t.Fatalf("staff answer %+v", a)
	}
	if calls.Load() != 1 {
		t.Fatalf("the model was called for the staff token (%d upstream requests)", calls.Load())
	}

	resp, _ = post(tok["hr"], true)
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, d)
		}
	}
	resp.Body.Close()
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream events %v", events)
	}
	var last struct {
		Citations []kb.Citation `json:"citations"`
	}
	if err := json.Unmarshal([]byte(events[len(events)-2]), &last); err != nil || len(last.Citations) == 0 || last.Citations[0].Doc != hrDoc.DocID {
		t.Fatalf("last event before [DONE]: %s", events[len(events)-2])
	}

	if node, err := exec.LookPath("node"); err != nil {
		t.Log("node is not installed: the openai client part is skipped")
	} else if _, err := os.Stat("../js/node_modules/openai/package.json"); err != nil {
		t.Log("the openai npm package is not installed (cd gateway/js && npm ci): its part is skipped")
	} else {
		before := calls.Load()
		cmd := exec.Command(node, "kb.mjs")
		cmd.Dir = "../js"
		cmd.Env = append(os.Environ(), "GATEWAY_URL="+base+"/v1/kb", "NODE_EXTRA_CA_CERTS="+filepath.Join(tlsDir, certs.CAFile),
			"KB_MODEL="+s.Model, "KB_QUESTION="+question, "KB_DOC_ID="+strconv.FormatInt(hrDoc.DocID, 10),
			"HR_TOKEN="+tok["hr"], "STAFF_TOKEN="+tok["staff"], "KB_NOT_FOUND="+kb.DefaultNotFoundZH)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("node kb.mjs: %v\n%s", err, out)
		}
		if n := calls.Load() - before; n != 2 {
			t.Errorf("the node client's four questions reached the model %d times, want 2 (hr only)", n)
		}
		t.Logf("openai client: %s", out)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify([]string{auditFile}, audit.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(auditFile)
	called := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r audit.Record
		json.Unmarshal([]byte(line), &r)
		if r.Kind == audit.KindKBQuery && r.KB.ModelCalled != nil {
			called[r.RequestID] = *r.KB.ModelCalled
		}
	}
	if c, ok := called[hrReq]; !ok || !c {
		t.Errorf("hr's kb.query: %v %v", c, ok)
	}
	if c, ok := called[staffReq]; !ok || c {
		t.Errorf("staff's kb.query: %v %v", c, ok)
	}
	if strings.Contains(string(data), "年假") {
		t.Error("the audit log holds question or chunk text")
	}
}
