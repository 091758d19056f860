package gateway

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	s, err := ParseConfig([]byte("upstream: http://127.0.0.1:8000\nmax-tokens: 2048\ntls13-only: true\n"))
	if err != nil || len(s) != 3 || s[1].Name != "max-tokens" || s[1].Value != "2048" || s[1].Line != 2 {
		t.Fatalf("%+v %v", s, err)
	}
	if s, err := ParseConfig([]byte(`{"listen": "127.0.0.1:1"}`)); err != nil || s[0].Value != "127.0.0.1:1" {
		t.Fatalf("JSON: %+v %v", s, err)
	}
	for in, want := range map[string]string{
		"- a\n- b\n":        "want a mapping",
		"a: 1\na: 2\n":      `line 2: "a" set twice`,
		"a:\n  b: 1\n":      "single value",
		"a: 1\n---\nb: 2\n": "more than one",
		"a: [1\n":           "config",
	} {
		if _, err := ParseConfig([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseConfig(%q) = %v, want %q", in, err, want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("upstream: http://127.0.0.1:8000\nmax-tokens: 2048\n"))
	f.Add([]byte("{}"))
	f.Add([]byte("a: &x 1\nb: *x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseConfig(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, e := range s {
			if seen[e.Name] {
				t.Fatalf("duplicate %q accepted", e.Name)
			}
			seen[e.Name] = true
		}
	})
}
