package verify

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func init() {
	register(Check{
		ID: "services.hardening", Title: "the systemd units of the runtime and gateway score within the exposure limits",
		Severity: Medium, Controls: []string{"CM-6", "CM-7", "AC-6"},
		Rationale:   "Sandboxing (no new privileges, read-only system, no capabilities, IP allowlists, device policy) limits what a compromised server can do.",
		Remediation: "Restore the units install generated (re-run install); 'systemd-analyze security --offline=yes UNIT' names each weak setting.",
		Run:         checkHardening,
	})
}

// sandboxed reads a unit's main process's status: it must have no
// capabilities, no way to gain privileges, a seccomp filter, and BPF
// programs enforcing its IP allowlist on its cgroup.
func sandboxed(s state.Service) (Evidence, []string) {
	if s.PID <= 0 {
		return ev(s.Name, "unit %s has no main process", filepath.Base(s.Unit)), []string{s.Name + " is not running"}
	}
	st, err := procStatus(s.PID)
	if err != nil {
		return ev(s.Name, "%v", err), []string{err.Error()}
	}
	want := map[string]string{"NoNewPrivs": "1", "Seccomp": "2", "CapEff": "0000000000000000", "CapBnd": "0000000000000000"}
	var problems []string
	for _, k := range []string{"NoNewPrivs", "Seccomp", "CapEff", "CapBnd"} {
		if st[k] != want[k] {
			problems = append(problems, fmt.Sprintf("%s (pid %d) has %s %q, want %q", s.Name, s.PID, k, st[k], want[k]))
		}
	}
	// IPAddressDeny= is only in force where systemd could attach its BPF
	// programs to the unit's cgroup; it says nothing when it cannot.
	filter := "IP filter: "
	if in, out, err := ipFilterPrograms(s.PID); err != nil {
		filter += err.Error()
		problems = append(problems, fmt.Sprintf("%s (pid %d): cannot read its IP filter: %v", s.Name, s.PID, err))
	} else {
		filter += fmt.Sprintf("%d ingress and %d egress BPF programs", in, out)
		if in == 0 || out == 0 {
			problems = append(problems, fmt.Sprintf("%s (pid %d) runs without its IPAddressDeny= filter (no cgroup BPF program attached; the kernel or a container refused bpf(2))", s.Name, s.PID))
		}
	}
	return ev(s.Name, "pid %d: NoNewPrivs %s, Seccomp %s (filter mode), CapEff %s, CapBnd %s; %s",
		s.PID, st["NoNewPrivs"], st["Seccomp"], st["CapEff"], st["CapBnd"], filter), problems
}

func checkHardening(ctx context.Context, t *Target) Outcome {
	type unit struct {
		path  string
		limit float64
	}
	var units []unit
	if t.State != nil {
		if u := t.State.Gateway.Unit; u != "" {
			units = append(units, unit{u, harden.MaxGatewayExposure})
		}
		if u := t.State.Runtime.Unit; u != "" {
			units = append(units, unit{u, harden.MaxRuntimeExposure})
		}
	}
	if len(units) == 0 {
		return notApplicable("the services run under the project's supervisor, not systemd units")
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		return errored(fmt.Errorf("systemd-analyze is not installed: %w", err))
	}
	var evs []Evidence
	var bad []string
	for _, u := range units {
		score, out, err := harden.Exposure(ctx, u.path)
		if err != nil {
			return errored(err, ev(u.path, "%s", strings.TrimSpace(out)))
		}
		evs = append(evs, ev(u.path, "exposure %.1f (limit %.1f)", score, u.limit))
		if score > u.limit {
			bad = append(bad, fmt.Sprintf("%s scores %.1f, above %.1f", u.path, score, u.limit))
		}
	}
	// The unit files say what systemd should do; the running processes
	// show that it did.
	for _, s := range t.services() {
		if s.Unit == "" {
			continue
		}
		e, problems := sandboxed(s)
		evs = append(evs, e)
		bad = append(bad, problems...)
	}
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "), evs...)
	}
	return pass(fmt.Sprintf("%d unit(s) within the exposure limits, their processes sandboxed", len(units)), evs...)
}
