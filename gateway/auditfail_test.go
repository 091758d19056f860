//go:build linux

package gateway

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAuditFailureRefusesRequests fills a small tmpfs under the audit log:
// once a line cannot be written, requests are refused with 503 rather than
// served unaudited, and /healthz fails. Needs root (mount).
func TestAuditFailureRefusesRequests(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs for the audit log")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	h := newHarness(t, func(o *Options) { o.AuditLog = filepath.Join(dir, "audit.log") })
	if code, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil); code != 200 {
		t.Fatalf("before the disk is full: %d", code)
	}
	// Fill the filesystem.
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 128<<10))
	f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, _, body := h.do("GET", "/v1/models", h.tok["user"], nil)
		if code == 503 && strings.Contains(string(body), "audit_unavailable") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with the audit disk full the gateway still answers %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(h.metricsURL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/healthz %d with the audit log failing", resp.StatusCode)
	}
	if v := scrape(t, h, "qwen_gateway_audit_write_failing"); v != 1 {
		t.Errorf("qwen_gateway_audit_write_failing %v with the audit log failing", v)
	}
	h.cancel()
	<-h.done
	h.g.Close() // reports the write error; the test expects it
	h.cancel = nil
}
