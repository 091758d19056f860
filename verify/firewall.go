package verify

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/harden"
)

func init() {
	register(Check{
		ID: "network.firewall", Title: "our nftables table is live, drops by default, and equals the recorded ruleset",
		Severity: Critical, Controls: []string{"SC-7", "SC-7(5)", "AC-4", "CM-5"},
		Rationale:   "Deny-by-default egress is what keeps prompts and weights on the host; the rules file and boot unit keep it after a reboot.",
		Remediation: "Re-apply with 'qwen-appliance harden apply' (or re-run install); 'qwen-appliance harden status' shows the rule-by-rule difference.",
		Run:         checkFirewall,
	})
}

// netfilter opens nftables in the recorded network namespace (the current
// one when none is recorded).
func (t *Target) netfilter() (harden.Netfilter, func(), error) {
	if t.State == nil || t.State.Firewall.NetNS == "" {
		k, err := harden.Open()
		return k, func() {}, err
	}
	return harden.OpenNetNS(t.State.Firewall.NetNS)
}

func checkFirewall(_ context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Firewall.Table == "" {
		return notApplicable("install recorded no firewall")
	}
	nf, done, err := t.netfilter()
	if err != nil {
		return errored(err)
	}
	defer done()
	st, err := harden.Check(nf, harden.Root(t.Root))
	if err != nil {
		return errored(err)
	}
	evs := []Evidence{
		ev("live table", "%v", st.LiveTable), ev("in sync with intended", "%v", st.InSync),
		ev("rules file", "%s (sha256 %s, intact %v)", st.RulesFile, st.FileSHA256, st.FileIntact),
		ev("recorded sha256", "%s", t.State.Firewall.RulesetSHA256),
	}
	for _, d := range st.Diff {
		evs = append(evs, ev("diff", "%s", d))
	}
	for _, p := range st.Problems {
		evs = append(evs, ev("problem", "%s", p))
	}
	// The boot unit must be there and enabled, or a reboot comes up open.
	root := harden.Root(t.Root)
	if t.Root == "/" {
		root = ""
	}
	// The link names the unit as the booted host sees it (no root prefix).
	target, _ := os.Readlink(root.BootUnitLink())
	_, unitErr := os.Stat(root.BootUnit())
	enabled := unitErr == nil && target == filepath.Join(harden.UnitDir, harden.FirewallUnit)
	evs = append(evs, ev("boot unit", "%s enabled=%v (via %s)", root.BootUnit(), enabled, root.BootUnitLink()))
	switch {
	case !st.LiveTable:
		return fail("table inet "+harden.TableName+" is not loaded: egress is not denied", evs...)
	case !st.OK():
		return fail("the firewall differs from what was applied: "+strings.Join(append(st.Problems, st.Diff...), "; "), evs...)
	case st.SHA256 != t.State.Firewall.RulesetSHA256:
		return fail("the applied ruleset is not the one install recorded", evs...)
	case !enabled:
		return fail("the boot unit that loads the firewall is missing or not enabled: a reboot would come up without it", evs...)
	}
	return pass("table live with policy drop, equal to the recorded ruleset", evs...)
}
