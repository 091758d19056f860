package verify

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/harden"
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
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "), evs...)
	}
	return pass(fmt.Sprintf("%d unit(s) within the exposure limits", len(units)), evs...)
}
