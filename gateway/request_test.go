package gateway

import (
	"os"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
)

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
