package gateway

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestOnlyAllowlistedRoutes(t *testing.T) {
	h := newHarness(t, nil)
	user := h.tok["user"]
	for _, c := range []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/slots"}, {"GET", "/health"}, {"GET", "/props"}, {"GET", "/"},
		{"GET", "/v1/internal"}, {"GET", "/v1/../metrics"}, {"GET", "//metrics"}, {"GET", "/v1/models/../../slots"},
		{"GET", "/V1/models"}, {"GET", "/v1/models/"}, {"GET", "/v1/chat/completions"}, {"POST", "/v1/models"},
		{"GET", "/debug/last"}, {"GET", "/v1/chat/completions%2f..%2f..%2fslots"}, {"DELETE", "/v1/models"},
	} {
		code, _, body := h.do(c.method, c.path, user, nil)
		if code != 404 && code != 405 {
			t.Errorf("%s %s: status %d, want 404 or 405", c.method, c.path, code)
		}
		if strings.Contains(string(body), "SECRET-ADMIN") {
			t.Errorf("%s %s reached the upstream's admin route: %s", c.method, c.path, body)
		}
		errorCode(t, body)
	}
	// Without a token nothing, not even the route list, is answered.
	if code, _, body := h.do("GET", "/slots", "", nil); code != 401 || errorCode(t, body) != "invalid_api_key" {
		t.Errorf("/slots without a token: %d %s", code, body)
	}
	// Raw request with an absolute-form target naming another host.
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write([]byte("GET http://127.0.0.1:1/slots HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + user + "\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 404 {
		t.Errorf("absolute-form /slots: %v %v", resp, err)
	}
}

func TestTokens(t *testing.T) {
	h := newHarness(t, nil)
	wrong := h.tok["user"][:len(h.tok["user"])-4] + "0000"
	for name, c := range map[string]struct {
		token      string
		model      string
		status     int
		code       string
		authHeader string
	}{
		"missing":    {token: "", status: 401, code: "invalid_api_key"},
		"wrong":      {token: wrong, status: 401, code: "invalid_api_key"},
		"malformed":  {token: "sk-123", status: 401, code: "invalid_api_key"},
		"revoked":    {token: h.tok["revoked"], status: 401, code: "invalid_api_key"},
		"expired":    {token: h.tok["expired"], status: 401, code: "invalid_api_key"},
		"wrongModel": {token: h.tok["qwen"], model: "other", status: 403, code: "model_not_allowed"},
		"auditor":    {token: h.tok["auditor"], status: 403, code: "insufficient_role"},
	} {
		t.Run(name, func(t *testing.T) {
			model := c.model
			if model == "" {
				model = "qwen"
			}
			code, _, body := h.do("POST", "/v1/chat/completions", c.token, chat(model, nil))
			if code != c.status || errorCode(t, body) != c.code {
				t.Fatalf("status %d %s, want %d %s", code, body, c.status, c.code)
			}
		})
	}
	// The right model, and the model list narrowed to the token's models.
	if code, _, body := h.do("POST", "/v1/chat/completions", h.tok["qwen"], chat("qwen", nil)); code != 200 {
		t.Fatalf("allowed model: %d %s", code, body)
	}
	_, _, body := h.do("GET", "/v1/models", h.tok["qwen"], nil)
	if !strings.Contains(string(body), `"qwen"`) || strings.Contains(string(body), `"other"`) {
		t.Errorf("model list for a qwen-only token: %s", body)
	}
	if code, _, body := h.do("GET", "/v1/models", h.tok["auditor"], nil); code != 200 || !strings.Contains(string(body), `"other"`) {
		t.Errorf("auditor listing models: %d %s", code, body)
	}
	// The client's token never reaches the upstream.
	h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", nil))
	hdr, _, _, _ := h.upstreamSaw()
	if hdr.Get("Authorization") != "" || hdr.Get("X-Request-Id") == "" {
		t.Errorf("upstream saw headers %v", hdr)
	}
	// A token created while the gateway runs works after a reload.
	_, _, _ = h.do("GET", "/v1/models", h.tok["user"], nil)
}

func TestChatCompletion(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxTokens = 64 })
	code, hdr, body := h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", nil))
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var r struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage usage `json:"usage"`
	}
	if err := json.Unmarshal(body, &r); err != nil || len(r.Choices) != 1 {
		t.Fatalf("answer %s: %v", body, err)
	}
	// max_tokens was filled in with the cap.
	if _, sent, _, _ := h.upstreamSaw(); sent["max_tokens"] != float64(64) {
		t.Errorf("upstream got max_tokens %v, want the cap 64", sent["max_tokens"])
	}
	for _, k := range []string{"X-Content-Type-Options", "X-Frame-Options", "X-Request-Id"} {
		if hdr.Get(k) == "" {
			t.Errorf("header %s missing", k)
		}
	}
	if hdr.Get("Strict-Transport-Security") != "" {
		t.Error("HSTS sent over plain HTTP")
	}
	// completions and embeddings pass too.
	if code, _, body := h.do("POST", "/v1/completions", h.tok["user"], map[string]any{"model": "qwen", "prompt": "x", "max_tokens": 3}); code != 200 || !strings.Contains(string(body), "tok2") {
		t.Errorf("completions: %d %s", code, body)
	}
	if code, _, body := h.do("POST", "/v1/embeddings", h.tok["user"], map[string]any{"model": "qwen", "input": "x"}); code != 200 || !strings.Contains(string(body), "embedding") {
		t.Errorf("embeddings: %d %s", code, body)
	}
}

func TestLimits(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxBodyBytes = 2048; o.MaxTokens = 100; o.MaxN = 2 })
	user := h.tok["user"]
	for name, c := range map[string]struct {
		body   any
		status int
		code   string
	}{
		"too large":      {chat("qwen", map[string]any{"pad": strings.Repeat("x", 4096)}), 413, "request_too_large"},
		"max_tokens cap": {chat("qwen", map[string]any{"max_tokens": 101}), 400, "invalid_value"},
		"max_tokens bad": {chat("qwen", map[string]any{"max_tokens": "many"}), 400, "invalid_value"},
		"n cap":          {chat("qwen", map[string]any{"n": 3}), 400, "invalid_value"},
		"not json":       {"{", 400, "invalid_json"},
		"array":          {"[]", 400, "invalid_json"},
		"trailing":       {`{"model":"qwen"} {}`, 400, "invalid_json"},
		"no model":       {map[string]any{"messages": []any{}}, 400, "model_required"},
	} {
		code, _, body := h.do("POST", "/v1/chat/completions", user, c.body)
		if code != c.status || errorCode(t, body) != c.code {
			t.Errorf("%s: %d %s, want %d %s", name, code, body, c.status, c.code)
		}
	}
	// rpm: two requests a minute, the third is told when to retry.
	for i := range 2 {
		if code, _, body := h.do("GET", "/v1/models", h.tok["rpm"], nil); code != 200 {
			t.Fatalf("rpm request %d: %d %s", i, code, body)
		}
	}
	code, hdr, body := h.do("GET", "/v1/models", h.tok["rpm"], nil)
	if code != 429 || errorCode(t, body) != "rate_limit_exceeded" || hdr.Get("Retry-After") != "30" {
		t.Errorf("third request: %d Retry-After %q %s", code, hdr.Get("Retry-After"), body)
	}
	// tpm: 10 tokens a minute; the first answer uses 7+5.
	if code, _, body := h.do("POST", "/v1/chat/completions", h.tok["tpm"], chat("qwen", map[string]any{"max_tokens": 5})); code != 200 {
		t.Fatalf("tpm first: %d %s", code, body)
	}
	code, hdr, body = h.do("POST", "/v1/chat/completions", h.tok["tpm"], chat("qwen", map[string]any{"max_tokens": 5}))
	if code != 429 || hdr.Get("Retry-After") == "" {
		t.Errorf("tpm second: %d %s", code, body)
	}
	// An upstream OpenAI error passes through; any other 4xx body is replaced.
	code, _, body = h.do("POST", "/v1/chat/completions", user, chat("missing", nil))
	if code != 404 || errorCode(t, body) != "model_not_found" {
		t.Errorf("upstream 404: %d %s", code, body)
	}
	code, _, body = h.do("POST", "/v1/chat/completions", user, chat("qwen", map[string]any{"x_reject": true}))
	if code != 400 || strings.Contains(string(body), "/opt/secret") || errorCode(t, body) != "upstream_rejected" {
		t.Errorf("upstream plain 400: %d %s", code, body)
	}
	// Upstream failures are answered without their internals.
	code, _, body = h.do("POST", "/v1/chat/completions", user, chat("qwen", map[string]any{"x_fail": true}))
	if code != 502 || strings.Contains(string(body), "Traceback") || errorCode(t, body) != "upstream_error" {
		t.Errorf("upstream failure: %d %s", code, body)
	}
}

func TestAuthFailuresThrottled(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AuthFailures = 3 })
	for range 3 {
		if code, _, _ := h.do("GET", "/v1/models", "qwa_bad", nil); code != 401 {
			t.Fatalf("bad token: %d", code)
		}
	}
	// Now even a good token from this address waits.
	code, hdr, body := h.do("GET", "/v1/models", h.tok["user"], nil)
	if code != 429 || hdr.Get("Retry-After") == "" {
		t.Fatalf("after 3 failures: %d %s", code, body)
	}
}

func TestSlowClientCutOff(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.ReadHeaderTimeout = 300 * time.Millisecond; o.ReadTimeout = time.Second })
	addr := strings.TrimPrefix(h.url, "http://")
	// Slowloris: headers that never end.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"))
	go func() {
		for range 20 {
			time.Sleep(100 * time.Millisecond)
			if _, err := conn.Write([]byte("X-Slow: 1\r\n")); err != nil {
				return
			}
		}
	}()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the gateway kept a slow-header connection open for 5s")
			}
			break
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow client cut off after %v", d)
	}
	// A body that trickles in is cut off by the read timeout.
	conn2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + h.tok["user"] + "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"))
	conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn2), nil)
	if err == nil && resp.StatusCode == 200 {
		t.Fatal("a trickling body was answered 200")
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the gateway waited 5s for a trickling body")
	}
}

func TestConcurrencyBound(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxConcurrent = 1 })
	req, _ := http.NewRequest("POST", h.url+"/v1/chat/completions", strings.NewReader(`{"model":"qwen","stream":true,"max_tokens":10,"x_delay_ms":100}`))
	req.Header.Set("Authorization", "Bearer "+h.tok["user"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // the stream holds the only slot until here
	code, hdr, body := h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", map[string]any{"max_tokens": 2}))
	if code != 503 || hdr.Get("Retry-After") == "" || errorCode(t, body) != "server_busy" {
		t.Fatalf("second request while one streams: %d %.300s", code, body)
	}
}
