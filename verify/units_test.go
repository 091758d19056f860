package verify

import (
	"os"
	"os/exec"
	"path/filepath"
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
	expect(t, runOne(t, "services.hardening", &Target{State: st}), Pass, "(limit 2.0)")

	bare := filepath.Join(dir, "bare.service")
	must(t, os.WriteFile(bare, []byte("[Service]\nExecStart=/usr/lib/qwen-appliance/qwen-appliance serve\n"), 0o644))
	st.Gateway.Unit = bare
	expect(t, runOne(t, "services.hardening", &Target{State: st}), Fail, "above 2.0")
}
