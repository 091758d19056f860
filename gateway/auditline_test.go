package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// rawRequest sends req as written to the gateway over TCP and reads the
// answer; net/http's client would clean or refuse what it contains.
func (h *harness) rawRequest(req string) *http.Response {
	h.t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		h.t.Fatalf("%q: %v", req, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp
}

// auditRecords stops the gateway, verifies its log against its key and
// returns the request records.
func (h *harness) auditRecords() []audit.Record {
	h.t.Helper()
	h.stop()
	if _, err := audit.Verify([]string{h.auditFile}, audit.VerifyOptions{Trusted: []manifests.PublicKey{h.key.Public()}}); err != nil {
		h.t.Fatalf("audit verify after these requests: %v", err)
	}
	data, err := os.ReadFile(h.auditFile)
	if err != nil {
		h.t.Fatal(err)
	}
	var recs []audit.Record
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			h.t.Fatal(err)
		}
		if r.Kind == audit.KindRequest {
			recs = append(recs, r)
		}
	}
	return recs
}

// TestAuditLineOfHostilePath: the unauthenticated requests of issue 21
// case 1 (a path that decodes to invalid UTF-8; a long path whose 200-byte
// cut falls inside a character) leave a log that verifies, with the path
// made valid UTF-8 and cut on a character boundary.
func TestAuditLineOfHostilePath(t *testing.T) {
	h := newHarness(t, nil)
	long := "/v1/" + strings.Repeat("a", 195) + "%C3%A9b" // é is bytes 199 and 200 of the decoded path
	for _, target := range []string{"/v1/%ff", long, "/v1/%ed%a0%80", "/v1/%c3"} {
		resp := h.rawRequest("GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		if resp.StatusCode != 401 {
			t.Errorf("%s: %d", target, resp.StatusCode)
		}
	}
	recs := h.auditRecords()
	if len(recs) != 4 {
		t.Fatalf("%d request records, want 4", len(recs))
	}
	if recs[0].Route != "/v1/\uFFFD" {
		t.Errorf("logged %q for /v1/%%ff", recs[0].Route)
	}
	if want := "/v1/" + strings.Repeat("a", 195); recs[1].Route != want {
		t.Errorf("logged %q (%d bytes) for the long path, want it cut before the é", recs[1].Route, len(recs[1].Route))
	}
	for _, r := range recs {
		if !utf8.ValidString(r.Route) || len(r.Route) > 200 {
			t.Errorf("logged route %q", r.Route)
		}
	}
}

// FuzzAuditedRequest: any request a client can get past net/http's parser
// (method, target, a header, a body, with or without a valid token) leaves
// an audit log that verifies.
func FuzzAuditedRequest(f *testing.F) {
	f.Add("GET", "/v1/%ff", "x", "", false)
	f.Add("GET", "/v1/"+strings.Repeat("a", 195)+"%C3%A9b", "", "", true)
	f.Add("POST", "/v1/chat/completions", "application/json", `{"model":"q\xff\u2028<"}`, true)
	f.Add("OPTIONS", "*", "", "", false)
	f.Add("PUT", "/v1/models?x=%00", "\x80", "", true)
	dir := f.TempDir()
	tokFile := filepath.Join(dir, "tokens.json")
	s := &tokens.Store{}
	tok, _, err := s.Create(tokens.CreateOptions{Name: "fuzz", Role: tokens.RoleUser})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.Save(tokFile); err != nil {
		f.Fatal(err)
	}
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	// Port 9 (discard) on loopback: forwarded requests fail fast with 502.
	g, err := New(Options{Upstream: "http://127.0.0.1:9", TokensFile: tokFile, AuditLog: filepath.Join(dir, "first.log"), AuditKey: &key, AuditContent: true})
	if err != nil {
		f.Fatal(err)
	}
	g.Close()
	f.Fuzz(func(t *testing.T, method, target, header, body string, authed bool) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: x\r\nX-Fuzz: " + header + "\r\nContent-Type: application/json\r\n"
		if authed {
			raw += "Authorization: Bearer " + tok + "\r\n"
		}
		raw += "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil || !validMethod(req.Method) {
			return // net/http answers 400 itself, before any handler
		}
		req.RemoteAddr = "127.0.0.1:1"
		path := filepath.Join(t.TempDir(), "audit.log")
		if g.audit, err = audit.Open(audit.Options{Path: path, Key: &key}); err != nil {
			t.Fatal(err)
		}
		g.Handler().ServeHTTP(httptest.NewRecorder(), req)
		if err := g.audit.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := audit.Verify([]string{path}, audit.VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}}); err != nil {
			data, _ := os.ReadFile(path)
			t.Fatalf("%q: %v\n%s", raw, err, data)
		}
	})
}

// validMethod is net/http's check of a request method (a token).
func validMethod(m string) bool {
	return len(m) > 0 && strings.IndexFunc(m, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r)
	}) < 0
}

// TestEveryMethodAndTargetAudited: OPTIONS * (which net/http answers 200 by
// itself unless told not to), OPTIONS on an API route, CONNECT and unknown
// methods go through the same authentication, security headers and audit
// line as every other request (issue 21 case 10).
func TestEveryMethodAndTargetAudited(t *testing.T) {
	h := newHarness(t, nil)
	cases := []struct {
		line, token string
		status      int
	}{
		{"OPTIONS * HTTP/1.1", "", 401},
		{"OPTIONS * HTTP/1.1", h.tok["user"], 404},
		{"OPTIONS /v1/chat/completions HTTP/1.1", "", 401},
		{"OPTIONS /v1/chat/completions HTTP/1.1", h.tok["user"], 405},
		{"CONNECT 127.0.0.1:22 HTTP/1.1", "", 401},
		{"BREW /v1/models HTTP/1.1", "", 401},
		{"TRACE /v1/models HTTP/1.1", h.tok["user"], 405},
	}
	for _, c := range cases {
		req := c.line + "\r\nHost: x\r\nConnection: close\r\n"
		if c.token != "" {
			req += "Authorization: Bearer " + c.token + "\r\n"
		}
		resp := h.rawRequest(req + "\r\n")
		if resp.StatusCode != c.status {
			t.Errorf("%s (token %v): %d, want %d", c.line, c.token != "", resp.StatusCode, c.status)
		}
		for _, k := range []string{"X-Request-Id", "X-Content-Type-Options", "Content-Security-Policy", "Cache-Control"} {
			if resp.Header.Get(k) == "" {
				t.Errorf("%s: no %s header", c.line, k)
			}
		}
		if resp.Header.Get("Allow") != "" {
			t.Errorf("%s: answered by net/http (Allow: %s)", c.line, resp.Header.Get("Allow"))
		}
	}
	recs := h.auditRecords()
	if len(recs) != len(cases) {
		t.Fatalf("%d audit lines for %d requests", len(recs), len(cases))
	}
	for i, r := range recs {
		if r.Status != cases[i].status || r.Method != strings.Fields(cases[i].line)[0] {
			t.Errorf("audit line %d: %s %s %d, want %s", i, r.Method, r.Route, r.Status, cases[i].line)
		}
	}
}
