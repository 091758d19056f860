package tokens

import (
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary Authorization values to the token parser: it
// must never panic, and anything it accepts must have the one fixed form.
func FuzzParse(f *testing.F) {
	f.Add("qwa_0123456789abcdef_" + strings.Repeat("ab", 32))
	f.Add("qwa_")
	f.Add("qwa_0123456789abcdef-" + strings.Repeat("ab", 32))
	f.Add(strings.Repeat("_", Len))
	f.Fuzz(func(t *testing.T, s string) {
		sec, err := Parse(s)
		if err != nil {
			return
		}
		if len(s) != Len || !ValidID(sec.ID) || s[len(prefix):len(prefix)+idLen] != sec.ID {
			t.Fatalf("Parse accepted %q", s)
		}
	})
}

// FuzzParseStore feeds arbitrary token files to the store parser and
// authenticates a fixed token against whatever it accepts.
func FuzzParseStore(f *testing.F) {
	d := "sha256:" + strings.Repeat("00", 32)
	f.Add([]byte(`{"version":1,"tokens":[]}`))
	f.Add([]byte(`{"version":1,"tokens":[{"id":"0123456789abcdef","name":"a","role":"user","digest":"` + d + `","expires":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"tokens":[null]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStore(data)
		if err != nil {
			return
		}
		_, _ = s.Authenticate("qwa_0123456789abcdef_"+strings.Repeat("ab", 32), time.Now())
		for _, tok := range s.Tokens {
			_ = tok.State(time.Now())
		}
	})
}
