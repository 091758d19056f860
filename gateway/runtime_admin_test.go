package gateway

import (
	"strings"
	"testing"
)

// TestRuntimeStateRoutesRefused proves that no request through the gateway
// reaches the inference server's routes that change its state (Ollama's
// model deletion, download, creation, copy and upload): whatever the
// method, token or spelling, the gateway answers 404/405 itself and the
// upstream (whose catch-all answers SECRET-ADMIN) never sees the request.
// The firewall lets the gateway's user reach the runtime's port, so this
// allowlist is what keeps those routes out of reach.
func TestRuntimeStateRoutesRefused(t *testing.T) {
	h := newHarness(t, nil)
	_, _, before, _ := h.upstreamSaw()
	for _, route := range []string{"/api/delete", "/api/pull", "/api/create", "/api/copy", "/api/push", "/api/blobs/sha256:00"} {
		for _, path := range []string{route, strings.ToUpper(route), route + "/", "/" + route, "/v1/.." + route, "/v1/models/../.." + route, "/v1" + route} {
			for _, method := range []string{"GET", "POST", "DELETE", "PUT", "HEAD"} {
				code, _, body := h.do(method, path, h.tok["user"], `{"model":"qwen","name":"qwen","source":"qwen","destination":"x"}`)
				if code != 404 && code != 405 {
					t.Errorf("%s %s: status %d, want 404 or 405", method, path, code)
				}
				if strings.Contains(string(body), "SECRET-ADMIN") {
					t.Fatalf("%s %s reached the upstream: %s", method, path, body)
				}
			}
		}
		// Without a token: refused before routing (429 once the address
		// has failed too often).
		if code, _, body := h.do("POST", route, "", `{"model":"qwen"}`); (code != 401 && code != 429) || strings.Contains(string(body), "SECRET-ADMIN") {
			t.Errorf("POST %s without a token: status %d %s, want 401", route, code, body)
		}
	}
	if _, _, after, _ := h.upstreamSaw(); after != before {
		t.Errorf("the upstream recorded %d requests during the test, want none", after-before)
	}
}
