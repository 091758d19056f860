package gateway

import (
	"os"
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
