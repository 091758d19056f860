package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/kb"
)

// TestKBAsk: 'kb ask' answers the hr role from its document through the
// runtime (an OpenAI-compatible server on loopback that counts what it is
// asked), drops the citation the model invented, and answers the staff
// role not-found without asking the model.
func TestKBAsk(t *testing.T) {
	var calls atomic.Int64
	var lastSystem atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/models":
			io.WriteString(w, `{"object":"list","data":[{"id":"demo"}]}`)
		case "/v1/chat/completions":
			calls.Add(1)
			var req struct {
				Messages []struct{ Role, Content string }
			}
			json.NewDecoder(r.Body).Decode(&req)
			lastSystem.Store(req.Messages[0].Content)
			io.WriteString(w, `{"choices":[{"index":0,"message":{"role":"assistant","content":"每年十五天[1][4]。"}}]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	db := filepath.Join(t.TempDir(), "kb", "kb.db")
	k, err := kb.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	text := "年假制度。员工每年享有十五天带薪年假。"
	res, err := k.Put(context.Background(), kb.Document{Title: "年假制度", Source: "leave.md", Format: "text", Class: kb.Internal,
		Allow: []kb.Principal{"role:hr"}, Raw: []byte(text), Sections: []kb.Section{{Text: text}}}, kb.ChunkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	// The question (the last of args) first, the flags after it, as in
	// kb ask's example.
	ask := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		q, flags := args[len(args)-1], args[:len(args)-1]
		code := run(t.Context(), append([]string{"qwen-appliance", "kb", "ask", q, "--db", db, "--audit-log", "", "--upstream", srv.URL}, flags...), &out, &errb)
		return code, out.String(), errb.String()
	}
	code, out, stderr := ask("--as", "role:hr", "--clearance", "internal", "--json", "年假有多少天？")
	var r kbAskResult
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil {
		t.Fatalf("hr: exit %d\n%s\n%s", code, out, stderr)
	}
	if r.Answer != "每年十五天[1]。" || !r.ModelCalled || r.Model != "demo" || len(r.Citations) != 1 || r.Citations[0].Doc != res.DocID || !r.Citations[0].Cited {
		t.Errorf("hr answer %+v", r)
	}
	if s, _ := lastSystem.Load().(string); !strings.Contains(s, "十五天带薪年假") || calls.Load() != 1 {
		t.Errorf("the model got %q (%d calls)", s, calls.Load())
	}
	code, out, _ = ask("--as", "role:staff", "--clearance", "internal", "年假有多少天？")
	if code != 0 || strings.TrimSpace(out) != kb.DefaultNotFoundZH || calls.Load() != 1 {
		t.Errorf("staff: exit %d %q, %d model calls", code, out, calls.Load())
	}
	code, out, _ = ask("--as", "role:hr", "--clearance", "internal", "年假有多少天？")
	if code != 0 || !strings.Contains(out, "Sources:\n[1] 年假制度 — doc 1 v1 sha256:") {
		t.Errorf("text output: %q", out)
	}
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"年假"}, exitUsage, "no caller given"},
		{[]string{"--as", "role:hr", "a", "b"}, exitUsage, "want one question"},
		{[]string{"--as", "role:hr", "--max-tokens", "0", "年假"}, exitUsage, "--max-tokens"},
		{[]string{"--as", "role:hr", "--upstream", "ftp://x", "年假"}, exitUsage, "not http://HOST:PORT"},
		{[]string{"--as", "role:hr", "--clearance", "internal", "--upstream", "http://127.0.0.1:1", "年假"}, exitError, "runtime"},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"qwen-appliance", "kb", "ask", "--db", db, "--audit-log", ""}, c.args...)
		if code := run(t.Context(), args, &out, &errb); code != c.code || !strings.Contains(errb.String(), c.err) {
			t.Errorf("%v: exit %d, stderr %s", c.args, code, errb.String())
		}
	}
}
