package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

var (
	buildOnce   sync.Once
	upstreamBin string
	buildErr    error
	binDir      string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// testUpstream builds gateway/internal/testupstream (once per test binary)
// and starts it as a real process on a loopback port, or on a Unix socket
// when sock is not empty. It returns the gateway's --upstream URL.
func testUpstream(t testing.TB, sock string) (upstreamURL string, direct string, stop func()) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "testupstream-")
		if buildErr != nil {
			return
		}
		upstreamBin = filepath.Join(binDir, "testupstream")
		out, err := exec.Command("go", "build", "-o", upstreamBin, "./internal/testupstream").CombinedOutput()
		if err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build test upstream: %v", buildErr)
	}
	args := []string{"-listen", "127.0.0.1:0"}
	if sock != "" {
		args = []string{"-unix", sock}
	}
	cmd := exec.Command(upstreamBin, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	t.Cleanup(stop)
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("test upstream did not start: %v", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	if sock != "" {
		return "unix://" + sock, "", stop
	}
	return "http://" + addr, "http://" + addr, stop
}

// harness is a gateway in front of a real test upstream process.
type harness struct {
	t          testing.TB
	g          *Gateway
	url        string // API base, http(s)://127.0.0.1:PORT
	metricsURL string
	direct     string // the upstream itself, to check what it received
	dir        string
	tokensFile string
	auditFile  string
	key        manifests.PrivateKey
	tok        map[string]string // name → token
	client     *http.Client
	cancel     context.CancelFunc
	done       chan error
	stopUp     func()
}

// newHarness starts the gateway with tokens: "user" (all models), "qwen"
// (model qwen only), "rpm" (2 per minute), "tpm" (10 tokens per minute),
// "auditor", "revoked" and "expired".
func newHarness(t testing.TB, edit func(*Options)) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), tok: map[string]string{}, client: &http.Client{Timeout: 20 * time.Second}}
	up, direct, stop := testUpstream(t, "")
	h.direct, h.stopUp = direct, stop
	h.tokensFile = filepath.Join(h.dir, "tokens.json")
	h.auditFile = filepath.Join(h.dir, "audit.log")
	s := &tokens.Store{}
	past := time.Now().Add(-48 * time.Hour)
	for _, c := range []tokens.CreateOptions{
		{Name: "user", Role: tokens.RoleUser},
		{Name: "qwen", Role: tokens.RoleUser, Models: []string{"qwen"}},
		{Name: "rpm", Role: tokens.RoleUser, RPM: 2},
		{Name: "tpm", Role: tokens.RoleUser, TPM: 10},
		{Name: "auditor", Role: tokens.RoleAuditor},
		{Name: "revoked", Role: tokens.RoleAdmin},
		{Name: "expired", Role: tokens.RoleUser, Expires: time.Hour, Now: past},
	} {
		tok, _, err := s.Create(c)
		if err != nil {
			t.Fatal(err)
		}
		h.tok[c.Name] = tok
	}
	if _, err := s.Revoke("revoked", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(h.tokensFile); err != nil {
		t.Fatal(err)
	}
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	h.key = key
	o := Options{Upstream: up, TokensFile: h.tokensFile, AuditLog: h.auditFile, AuditKey: &key}
	if edit != nil {
		edit(&o)
	}
	h.start(o)
	return h
}

func (h *harness) start(o Options) {
	t := h.t
	g, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.g, h.cancel, h.done = g, cancel, make(chan error, 1)
	go func() { h.done <- g.Serve(ctx, ln, mln) }()
	scheme := "http"
	if g.tls != nil {
		scheme = "https"
	}
	h.url = scheme + "://" + ln.Addr().String()
	h.metricsURL = "http://" + mln.Addr().String()
	t.Cleanup(func() { h.stop() })
}

// stop shuts the gateway down and closes its audit log (idempotent).
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Serve: %v", err)
	}
	if err := h.g.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
	h.cancel = nil
}

// do sends a request with the named token ("" for none) and returns the
// status, headers and body.
func (h *harness) do(method, path, token string, body any) (int, http.Header, []byte) {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			data, _ := json.Marshal(b)
			rd = strings.NewReader(string(data))
		}
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// upstreamSaw returns what the upstream recorded about its last request.
func (h *harness) upstreamSaw() (hdr http.Header, body map[string]any, requests, cancelled int) {
	resp, err := http.Get(h.direct + "/debug/last")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Headers   http.Header    `json:"headers"`
		Body      map[string]any `json:"body"`
		Requests  int            `json:"requests"`
		Cancelled int            `json:"cancelled"`
	}
	json.NewDecoder(resp.Body).Decode(&v)
	return v.Headers, v.Body, v.Requests, v.Cancelled
}

// upstreamRaw returns the bytes of the last request body the upstream got.
func (h *harness) upstreamRaw() string {
	resp, err := http.Get(h.direct + "/debug/last")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Raw string `json:"raw"`
	}
	json.NewDecoder(resp.Body).Decode(&v)
	return v.Raw
}

func chat(model string, extra map[string]any) map[string]any {
	m := map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": "hello secret prompt"}}}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// errorCode reads the code of an OpenAI error body.
func errorCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Code == "" || e.Error.Type == "" {
		t.Fatalf("not an OpenAI error body: %s", body)
	}
	return e.Error.Code
}
