//go:build faultinject

package fault

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

func TestFail(t *testing.T) {
	t.Setenv(FailEnv, "store")
	var log bytes.Buffer
	if err := After(&log, "install", "firewall"); err != nil {
		t.Fatalf("After(firewall) = %v; only store should fail", err)
	}
	err := After(&log, "install", "store")
	var inj *Injected
	if !errors.As(err, &inj) || inj.Step != "store" {
		t.Fatalf("After(store) = %v, want *Injected for store", err)
	}
	if !bytes.Contains(log.Bytes(), []byte("QWA_FAIL_AFTER=store")) {
		t.Errorf("log %q does not name the variable", log.String())
	}
}

// TestKill runs this test binary again with KillEnv set and checks the
// child died of SIGKILL at the step.
func TestKill(t *testing.T) {
	if os.Getenv("FAULT_TEST_CHILD") == "1" {
		After(os.Stderr, "install", "gateway")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill$")
	cmd.Env = append(os.Environ(), "FAULT_TEST_CHILD=1", KillEnv+"=gateway")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("killing this install (SIGKILL)")) {
		t.Errorf("child output %q", out)
	}
}
