package verify

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func TestHardeningScore(t *testing.T) {
	expect(t, runOne(t, "services.hardening", &Target{State: &state.State{}}), NotApplicable, "supervisor")
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	dir := t.TempDir()
	text, err := harden.Unit(harden.Service{Description: "gateway", ExecStart: "/usr/lib/qwen-appliance/qwen-appliance serve"})
	must(t, err)
	good := filepath.Join(dir, harden.GatewayUnit)
	must(t, os.WriteFile(good, []byte(text), 0o644))
	st := &state.State{Gateway: state.Gateway{Service: state.Service{Name: "gateway", Unit: good}}}
	// The unit scores well, but no systemd runs it here: a unit that is
	// not running is not a sandboxed service.
	o := runOne(t, "services.hardening", &Target{State: st})
	expect(t, o, Fail, "(limit 2.0)")
	expect(t, o, Fail, "gateway is not running")

	bare := filepath.Join(dir, "bare.service")
	must(t, os.WriteFile(bare, []byte("[Service]\nExecStart=/usr/lib/qwen-appliance/qwen-appliance serve\n"), 0o644))
	st.Gateway.Unit = bare
	expect(t, runOne(t, "services.hardening", &Target{State: st}), Fail, "above 2.0")
}

// TestSandboxed reads a live process: this test's own, which has no seccomp
// filter, no cgroup IP filter and, as root, every capability.
func TestSandboxed(t *testing.T) {
	e, problems := sandboxed(state.Service{Name: "self", Unit: "/etc/systemd/system/self.service", PID: os.Getpid()})
	if !strings.Contains(e.Value, "Seccomp 0") {
		t.Errorf("evidence %q does not show Seccomp 0", e.Value)
	}
	if !strings.Contains(strings.Join(problems, "; "), `has Seccomp "0", want "2"`) {
		t.Errorf("problems %q do not name the missing seccomp filter", problems)
	}
	// No systemd put an IP filter on this test's cgroup (and without root
	// the kernel will not say): either way the check fails.
	joined := strings.Join(problems, "; ")
	if !strings.Contains(joined, "runs without its IPAddressDeny= filter") && !strings.Contains(joined, "cannot read its IP filter") {
		t.Errorf("problems %q do not name the missing IP filter", problems)
	}
	_, problems = sandboxed(state.Service{Name: "gone", Unit: "/etc/systemd/system/gone.service"})
	if len(problems) != 1 || problems[0] != "gone is not running" {
		t.Errorf("no process: problems %q", problems)
	}
}
