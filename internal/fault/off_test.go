//go:build !faultinject

package fault

import (
	"bytes"
	"testing"
)

// TestIgnoredByDefault proves a production build (no faultinject tag)
// ignores both variables: it neither fails nor kills itself (were it to,
// this test process would die).
func TestIgnoredByDefault(t *testing.T) {
	t.Setenv(KillEnv, "firewall")
	t.Setenv(FailEnv, "firewall")
	var log bytes.Buffer
	if err := After(&log, "install", "firewall"); err != nil {
		t.Fatalf("After = %v in a build without faultinject", err)
	}
	if Enabled || log.Len() != 0 {
		t.Fatalf("Enabled = %v, log %q", Enabled, log.String())
	}
}
