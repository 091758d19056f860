package gateway

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

// TestTokenFileReloadedWhileRunning proves that the running gateway picks up
// a changed token file by itself (the housekeeping loop, no SIGHUP): a token
// added to the file starts working and a token revoked in it stops.
func TestTokenFileReloadedWhileRunning(t *testing.T) {
	// Until the reload, every poll with the new token is a failed
	// authentication from 127.0.0.1; with the default limit (10 a minute)
	// a slow reload on a loaded machine got the poller throttled (429)
	// before the token became known. The throttle has its own test
	// (TestAuthFailuresThrottled); here it must stay out of the way.
	h := newHarness(t, func(o *Options) { o.AuthFailures = 100000 })
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
	if code, _, _ := h.do("GET", "/v1/models", tok, nil); code != 401 {
		t.Fatalf("new token before the file changed: %d, want 401", code)
	}
	// Make sure the modification time differs from the first load's.
	time.Sleep(10 * time.Millisecond)
	if err := s.Save(h.tokensFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(h.tokensFile, time.Now(), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// The housekeeping loop looks every 2 seconds; allow for a busy machine.
	deadline := time.Now().Add(20 * time.Second)
	for {
		newCode, _, _ := h.do("GET", "/v1/models", tok, nil)
		oldCode, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil)
		if newCode == 200 && oldCode == 401 {
			break
		}
		if newCode == 429 || oldCode == 429 {
			t.Fatalf("poller throttled: new token %d, revoked token %d", newCode, oldCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("after changing the token file: new token %d, revoked token %d", newCode, oldCode)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A token created while the gateway runs works on its first request, not
// only after the next housekeeping pass: an unknown token makes the gateway
// look at the token file before refusing.
func TestNewTokenWorksAtOnce(t *testing.T) {
	h := newHarness(t, nil)
	s, err := tokens.Load(h.tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Create(tokens.CreateOptions{Name: "fresh", Role: tokens.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(h.tokensFile); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := h.do("GET", "/v1/models", tok, nil); code != 200 {
		t.Fatalf("a token saved a moment ago: %d %s", code, body)
	}
	// A token the file does not hold is still refused (and the file is not
	// parsed again: it did not change).
	if code, _, _ := h.do("GET", "/v1/models", "qwa_0123456789abcdef_"+strings.Repeat("0", 64), nil); code != 401 {
		t.Fatalf("an unknown token: %d", code)
	}
}
