package gateway

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// FuzzParseRequest feeds arbitrary bodies to the request checker: it must
// never panic, and what it forwards must be a JSON object naming the model
// with max_tokens within the cap.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"model":"qwen","messages":[{"role":"user","content":"hi"}]}`))
	f.Add([]byte(`{"model":"qwen","max_tokens":5,"n":2,"stream":true}`))
	f.Add([]byte(`{"model":"qwen","max_tokens":null,"max_completion_tokens":7}`))
	f.Add([]byte(`{"model":1}`))
	f.Add([]byte(`[]`))
	rt := routes["/v1/chat/completions"]
	f.Fuzz(func(t *testing.T, data []byte) {
		req, aerr := parseRequest(data, rt, 100, 2)
		if aerr != nil {
			return
		}
		var out map[string]any
		if err := json.Unmarshal(req.body, &out); err != nil {
			t.Fatalf("forwarded body is not JSON: %v", err)
		}
		if out["model"] != req.model || req.model == "" {
			t.Fatalf("model %q vs %v", req.model, out["model"])
		}
		mt, _ := out["max_tokens"].(float64)
		mct, _ := out["max_completion_tokens"].(float64)
		if mt > 100 || mct > 100 || (mt == 0 && mct == 0) {
			t.Fatalf("forwarded max_tokens %v / max_completion_tokens %v with cap 100", out["max_tokens"], out["max_completion_tokens"])
		}
	})
}

func TestTokenFileReloadedWhileRunning(t *testing.T) {
	h := newHarness(t, nil)
	s, err := tokens.Load(h.tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Create(tokens.CreateOptions{Name: "late", Role: tokens.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke("user", time.Now()); err != nil {
		t.Fatal(err)
	}
	// Make sure the modification time differs from the first load's.
	time.Sleep(10 * time.Millisecond)
	if err := s.Save(h.tokensFile); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(h.tokensFile, time.Now(), time.Now().Add(time.Second))
	deadline := time.Now().Add(6 * time.Second)
	for {
		newOK, _, _ := h.do("GET", "/v1/models", tok, nil)
		oldCode, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil)
		if newOK == 200 && oldCode == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after changing the token file: new token %d, revoked token %d", newOK, oldCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
