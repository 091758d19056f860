package tokens

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCreateAuthenticate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	tok, entry, err := s.Create(CreateOptions{Name: "alice", Role: RoleUser, Models: []string{"qwen"}, Expires: 24 * time.Hour, RPM: 5, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) != Len || !strings.HasPrefix(tok, "qwa_"+entry.ID+"_") {
		t.Fatalf("token %q does not have the qwa_<id>_<secret> form", tok)
	}
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %04o, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), tok[len(prefix)+idLen+1:]) {
		t.Fatal("the token file contains the secret")
	}

	s, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Authenticate(tok, now.Add(time.Hour))
	if err != nil || got.Name != "alice" || !got.AllowsModel("qwen") || got.AllowsModel("other") {
		t.Fatalf("Authenticate = %+v, %v", got, err)
	}
	// A changed secret, an unknown ID, an expired and a revoked token.
	wrong := tok[:len(tok)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", tok[len(tok)-1])+1)%16])
	if _, err := s.Authenticate(wrong, now); !errors.Is(err, ErrUnknown) {
		t.Errorf("wrong secret: %v, want ErrUnknown", err)
	}
	other := "qwa_0000000000000000" + tok[len(prefix)+idLen:]
	if _, err := s.Authenticate(other, now); !errors.Is(err, ErrUnknown) {
		t.Errorf("unknown ID: %v, want ErrUnknown", err)
	}
	if _, err := s.Authenticate(tok, now.Add(25*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Errorf("after expiry: %v, want ErrExpired", err)
	}
	if _, err := s.Revoke("alice", now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(tok, now); !errors.Is(err, ErrRevoked) {
		t.Errorf("revoked: %v, want ErrRevoked", err)
	}
	if _, err := s.Revoke("nobody", now); err == nil {
		t.Error("revoking an unknown name succeeded")
	}
}

func TestParseRejects(t *testing.T) {
	good := "qwa_0123456789abcdef_" + strings.Repeat("ab", 32)
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		"", "Bearer x", good[:len(good)-1], good + "0",
		"qwb" + good[3:],
		strings.Replace(good, "_", "-", 2),
		"qwa_0123456789ABCDEF_" + strings.Repeat("ab", 32),
		"qwa_0123456789abcdef_" + strings.Repeat("zz", 32),
	} {
		if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestParseStoreRejects(t *testing.T) {
	d := "sha256:" + strings.Repeat("00", 32)
	for name, data := range map[string]string{
		"unknown field": `{"version":1,"tokens":[],"extra":1}`,
		"version":       `{"version":2,"tokens":[]}`,
		"bad id":        `{"version":1,"tokens":[{"id":"x","name":"a","role":"user","digest":"` + d + `"}]}`,
		"duplicate":     `{"version":1,"tokens":[{"id":"0123456789abcdef","name":"a","role":"user","digest":"` + d + `"},{"id":"0123456789abcdef","name":"b","role":"user","digest":"` + d + `"}]}`,
		"bad role":      `{"version":1,"tokens":[{"id":"0123456789abcdef","name":"a","role":"root","digest":"` + d + `"}]}`,
		"bad digest":    `{"version":1,"tokens":[{"id":"0123456789abcdef","name":"a","role":"user","digest":"md5:00"}]}`,
		"trailing":      `{"version":1,"tokens":[]} {}`,
	} {
		if _, err := ParseStore([]byte(data)); err == nil {
			t.Errorf("%s: ParseStore accepted %s", name, data)
		}
	}
}

func TestUpdateConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			errs <- Update(path, func(s *Store) error {
				_, _, err := s.Create(CreateOptions{Name: "t" + string(rune('a'+i)), Role: RoleUser})
				return err
			})
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Tokens) != 8 {
		t.Fatalf("%d tokens after 8 concurrent creates: updates were lost", len(s.Tokens))
	}
}

// TestAccessFields: knowledge-base roles and clearance are kept, checked,
// and optional, so that token files written before them still load.
func TestAccessFields(t *testing.T) {
	old := `{"version":1,"tokens":[{"id":"0123456789abcdef","name":"a","role":"user","created":"2026-01-01T00:00:00Z","digest":"sha256:` + strings.Repeat("00", 32) + `"}]}`
	s, err := ParseStore([]byte(old))
	if err != nil {
		t.Fatalf("a token file without roles: %v", err)
	}
	if tk := s.Find("0123456789abcdef"); tk == nil || len(tk.Roles) != 0 || tk.Clearance != "" {
		t.Fatalf("Find = %+v", tk)
	}
	_, tk, err := s.Create(CreateOptions{Name: "hr", Role: RoleUser, Roles: []string{"hr", "finance", "hr"}, Clearance: "internal"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(tk.Roles, ",") != "finance,hr" || tk.Clearance != "internal" {
		t.Errorf("created %v %q, want finance,hr internal", tk.Roles, tk.Clearance)
	}
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	s2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Find(tk.ID); got == nil || strings.Join(got.Roles, ",") != "finance,hr" || got.Clearance != "internal" {
		t.Errorf("reloaded %+v", got)
	}
	for _, bad := range []CreateOptions{
		{Name: "x", Role: RoleUser, Clearance: "topsecret"},
		{Name: "x", Role: RoleUser, Roles: []string{"HR"}},
		{Name: "x", Role: RoleUser, Roles: []string{"a,b"}},
		{Name: "x", Role: RoleUser, Roles: []string{""}},
	} {
		if _, _, err := s.Create(bad); err == nil {
			t.Errorf("Create(%+v) succeeded", bad)
		}
	}
	for _, bad := range []string{`"clearance":"top"`, `"roles":["Role:HR"]`} {
		doc := strings.Replace(old, `"role":"user"`, `"role":"user",`+bad, 1)
		if _, err := ParseStore([]byte(doc)); err == nil {
			t.Errorf("ParseStore accepted %s", bad)
		}
	}
}
