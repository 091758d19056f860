package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// openStream starts a streamed chat completion and returns the response.
func (h *harness) openStream(ctx context.Context, body string) *http.Response {
	h.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+h.tok["user"])
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		h.t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

func TestStreamFlushedPerEvent(t *testing.T) {
	h := newHarness(t, nil)
	start := time.Now()
	resp := h.openStream(context.Background(), `{"model":"qwen","stream":true,"max_tokens":4,"x_delay_ms":250,"stream_options":{"include_usage":true}}`)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var arrivals []time.Duration
	var last string
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			arrivals = append(arrivals, time.Since(start))
			last = data
		}
	}
	// 4 tokens, the usage chunk, [DONE].
	if len(arrivals) != 6 || last != "[DONE]" {
		t.Fatalf("events %d, last %q", len(arrivals), last)
	}
	// Each token arrives on its own, not all at the end.
	if gap := arrivals[3] - arrivals[0]; gap < 500*time.Millisecond {
		t.Errorf("tokens 1..4 arrived within %v: the stream was buffered", gap)
	}
	h.stop()
	rep, recs := readAudit(t, h)
	if rep.Requests != 1 {
		t.Fatalf("audit requests %d", rep.Requests)
	}
	r := recs[0]
	if !r.Stream || r.PromptTokens != 7 || r.CompletionTokens != 4 || r.TTFTMs <= 0 || r.TTFTMs >= r.LatencyMs {
		t.Errorf("audit record %+v", r)
	}
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	h := newHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	resp := h.openStream(ctx, `{"model":"qwen","stream":true,"max_tokens":100,"x_delay_ms":50}`)
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, _, _, cancelled := h.upstreamSaw()
		if cancelled == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the upstream kept generating after the client left")
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.stop()
	_, recs := readAudit(t, h)
	if recs[0].Error != "client_closed" {
		t.Errorf("audit record %+v, want error client_closed", recs[0])
	}
}

func TestAuditRecordsRequests(t *testing.T) {
	h := newHarness(t, nil)
	h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", map[string]any{"max_tokens": 3}))
	h.do("POST", "/v1/chat/completions", h.tok["revoked"], chat("qwen", nil))
	h.do("GET", "/slots", h.tok["user"], nil)
	h.stop()
	rep, recs := readAudit(t, h)
	if rep.Requests != 3 || len(recs) != 3 {
		t.Fatalf("report %+v", rep)
	}
	ok, revoked, slots := recs[0], recs[1], recs[2]
	if ok.Status != 200 || ok.Model != "qwen" || ok.PromptTokens != 7 || ok.CompletionTokens != 3 || ok.TokenID == "" || ok.RequestID == "" || !strings.HasPrefix(ok.Client, "127.0.0.1:") {
		t.Errorf("ok record %+v", ok)
	}
	if revoked.Status != 401 || revoked.TokenID == "" || revoked.Error != "invalid_api_key" {
		t.Errorf("revoked record %+v", revoked)
	}
	if slots.Status != 404 || slots.Route != "/slots" {
		t.Errorf("slots record %+v", slots)
	}
	data, _ := os.ReadFile(h.auditFile)
	for name, tok := range h.tok {
		if strings.Contains(string(data), tok[len(tok)-64:]) {
			t.Errorf("token secret of %s in the audit log", name)
		}
	}
	if strings.Contains(string(data), "secret prompt") || strings.Contains(string(data), "tok1") {
		t.Error("prompt or completion text in the audit log without --audit-content")
	}
}

func TestAuditContentWhenAsked(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AuditContent = true })
	h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", map[string]any{"max_tokens": 3}))
	resp := h.openStream(context.Background(), `{"model":"qwen","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"streamed secret"}]}`)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h.stop()
	_, recs := readAudit(t, h)
	c := recs[0].Content
	if c == nil || !strings.Contains(string(c.Request), "secret prompt") || !strings.Contains(string(c.Response), "tok2") {
		t.Fatalf("content %+v", c)
	}
	c = recs[1].Content
	var chunks []json.RawMessage
	if c == nil || !strings.Contains(string(c.Request), "streamed secret") || json.Unmarshal(c.Response, &chunks) != nil || len(chunks) != 3 {
		t.Fatalf("streamed content %+v", c)
	}
}

func TestUnixSocketUpstream(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "up.sock")
	up, _, _ := testUpstream(t, sock)
	h := newHarness(t, func(o *Options) { o.Upstream = up })
	code, _, body := h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", map[string]any{"max_tokens": 2}))
	if code != 200 || !strings.Contains(string(body), "tok1") {
		t.Fatalf("over a Unix socket: %d %s", code, body)
	}
	if _, err := newUpstream("http://10.0.0.1:8000", &Options{MaxConcurrent: 1}); err == nil {
		t.Error("a non-loopback upstream was accepted")
	}
	if _, err := newUpstream("unix://relative.sock", &Options{MaxConcurrent: 1}); err == nil {
		t.Error("a relative socket path was accepted")
	}
}

func TestMetricsAndHealth(t *testing.T) {
	h := newHarness(t, nil)
	h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", map[string]any{"max_tokens": 3}))
	h.do("GET", "/v1/models", "qwa_nope", nil)
	get := func(path string) (int, string) {
		resp, err := http.Get(h.metricsURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		return resp.StatusCode, b.String()
	}
	code, m := get("/metrics")
	for _, want := range []string{
		`qwen_gateway_requests_total{route="/v1/chat/completions",status="200",token="`,
		`qwen_gateway_auth_failures_total{reason="malformed"} 1`,
		`qwen_gateway_tokens_total{kind="completion"`,
		`qwen_gateway_time_to_first_token_seconds_bucket`,
		`qwen_gateway_request_duration_seconds_bucket`,
	} {
		if code != 200 || !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz %d with the upstream up", code)
	}
	// The API listener does not serve metrics.
	if code, _, _ := h.do("GET", "/metrics", h.tok["user"], nil); code != 404 {
		t.Errorf("/metrics on the API listener: %d", code)
	}
	h.stopUp()
	if code, _ := get("/readyz"); code != 503 {
		t.Errorf("/readyz %d with the upstream down", code)
	}
	if code, _, body := h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", nil)); code != 502 || errorCode(t, body) != "upstream_error" {
		t.Errorf("upstream down: %d %s", code, body)
	}
}

// readAudit verifies the (closed) audit log with the harness key and returns
// its request records.
func readAudit(t *testing.T, h *harness) (*audit.Report, []audit.Record) {
	t.Helper()
	rep, err := audit.Verify([]string{h.auditFile}, audit.VerifyOptions{Trusted: []manifests.PublicKey{h.key.Public()}})
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	data, _ := os.ReadFile(h.auditFile)
	var recs []audit.Record
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r audit.Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Kind == audit.KindRequest {
			recs = append(recs, r)
		}
	}
	return rep, recs
}
