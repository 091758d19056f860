package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// modelServer answers /v1/models with one model named name.
func modelServer(t *testing.T, name string) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"`+name+`","object":"model"}]}`)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestUpstreamFileSwitch(t *testing.T) {
	dir := t.TempDir()
	a, b := modelServer(t, "release-a"), modelServer(t, "release-b")
	upFile := filepath.Join(dir, "upstream")
	if err := os.WriteFile(upFile, []byte(a.URL+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "tokens.json")
	st := &tokens.Store{}
	secret, _, err := st.Create(tokens.CreateOptions{Name: "t", Role: tokens.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Save(tokFile); err != nil {
		t.Fatal(err)
	}
	g, err := New(Options{UpstreamFile: upFile, TokensFile: tokFile, AuditLog: filepath.Join(dir, "audit.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	front := httptest.NewServer(g.Handler())
	defer front.Close()
	models := func() string {
		req, _ := http.NewRequest(http.MethodGet, front.URL+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := models(); !strings.Contains(got, "release-a") {
		t.Fatalf("before the switch: %s", got)
	}
	if err := os.WriteFile(upFile, []byte(b.URL+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := models(); !strings.Contains(got, "release-b") {
		t.Fatalf("after the switch: %s", got)
	}
	// A file naming a non-loopback upstream is refused and the old one stays.
	if err := os.WriteFile(upFile, []byte("http://192.0.2.1:8000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := g.Reload(); err == nil {
		t.Fatal("a non-loopback upstream was accepted")
	}
	if got := models(); !strings.Contains(got, "release-b") {
		t.Fatalf("after a refused switch: %s", got)
	}
}
