//go:build linux

package verify

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// netPair makes a "host" and an "internet" network namespace joined by a veth
// pair (10.231.N.1 on host, .2 on internet) and deletes both when the test
// ends. It skips when not root or without iproute2.
func netPair(t *testing.T) (host, peerIP string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("network namespace tests need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespace tests need iproute2 (ip)")
	}
	n := rand.IntN(200) + 20
	host, inet := fmt.Sprintf("qa-vh-%d-%d", os.Getpid(), n), fmt.Sprintf("qa-vi-%d-%d", os.Getpid(), n)
	vh, vi := fmt.Sprintf("qavh%d", n), fmt.Sprintf("qavi%d", n)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", host).Run()
		exec.Command("ip", "netns", "del", inet).Run()
	})
	sh(t, "ip", "netns", "add", host)
	sh(t, "ip", "netns", "add", inet)
	sh(t, "ip", "link", "add", vh, "netns", host, "type", "veth", "peer", "name", vi, "netns", inet)
	sh(t, "ip", "-n", host, "addr", "add", fmt.Sprintf("10.231.%d.1/24", n), "dev", vh)
	sh(t, "ip", "-n", inet, "addr", "add", fmt.Sprintf("10.231.%d.2/24", n), "dev", vi)
	for _, ns := range []string{host, inet} {
		sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	sh(t, "ip", "-n", host, "link", "set", vh, "up")
	sh(t, "ip", "-n", inet, "link", "set", vi, "up")
	return host, fmt.Sprintf("10.231.%d.2", n)
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// foreignDeny is another table's output drop that runs before ours
// (priority -10): it stops probes without the appliance's rules seeing them.
const foreignDeny = `table inet qa_verify_test {
	chain output { type filter hook output priority -10; policy drop; oif "lo" accept; }
}
`

// TestEgressProbeInNamespaces: the probe passes only when the appliance's
// own rules dropped every probe (their counter grew), fails when the peer
// ("the internet") answered or when something else dropped the probes, and
// is not applicable without a route.
func TestEgressProbeInNamespaces(t *testing.T) {
	host, peer := netPair(t)
	tg := &Target{Root: t.TempDir(), State: &state.State{Firewall: state.Firewall{NetNS: host, ProbeTargets: []string{peer}}}}
	noRoute := &Target{Root: tg.Root, State: &state.State{Firewall: state.Firewall{NetNS: host, ProbeTargets: []string{"198.51.100.7"}}}}

	// (b) No firewall, route present: the peer answers.
	expect(t, runOne(t, "network.egress-probe", tg), Fail, "left the host")
	// (c) No route: "network is unreachable" is no evidence of a firewall.
	expect(t, runOne(t, "network.egress-probe", noRoute), NotApplicable, "no route to any probe address")

	// (a) The appliance's firewall, route present: dropped and counted.
	nf, done, err := tg.netfilter()
	must(t, err)
	defer done()
	_, err = harden.Apply(context.Background(), nf, harden.Options{Policy: harden.EgressPolicy{APIPort: 8443, SSHPort: 22}, Root: harden.Root(tg.Root)})
	must(t, err)
	k := nf.(*harden.Kernel)
	before, err := k.EgressDrops()
	must(t, err)
	r := runOne(t, "network.egress-probe", tg)
	expect(t, r, Pass, "dropped by the appliance")
	for _, want := range []string{"tcp/443 blocked", "udp/53 blocked", "route " + peer} {
		if !strings.Contains(evidenceText(r), want) {
			t.Errorf("evidence lacks %q: %v", want, r.Evidence)
		}
	}
	after, err := k.EgressDrops()
	must(t, err)
	if after < before+2 {
		t.Errorf("drop counter %d → %d: the probes were not counted", before, after)
	}
	if !strings.Contains(evidenceText(r), "whole chain's counter") {
		t.Errorf("a table without the probe address's own counter must say the chain's counter was used: %v", r.Evidence)
	}
	// (a') With the address's own counted drop, as install applies it: the
	// probe is credited to that rule, which nothing else grows.
	peerAddr := netip.MustParseAddr(peer)
	_, err = harden.Apply(context.Background(), nf, harden.Options{Policy: harden.EgressPolicy{APIPort: 8443, SSHPort: 22, ProbeTargets: []netip.Addr{peerAddr}}, Root: harden.Root(tg.Root)})
	must(t, err)
	chainBefore, err := k.EgressDrops()
	must(t, err)
	r = runOne(t, "network.egress-probe", tg)
	expect(t, r, Pass, "dropped by the appliance")
	if !strings.Contains(evidenceText(r), harden.ProbeComment(peerAddr)) || strings.Contains(evidenceText(r), "whole chain's counter") {
		t.Errorf("the probe must be credited to its own rule: %v", r.Evidence)
	}
	if n, err := k.Drops(harden.ProbeComment(peerAddr)); err != nil || n < 2 {
		t.Errorf("probe counter %d, %v: the probes were not counted by their own rule", n, err)
	}
	if chainAfter, _ := k.EgressDrops(); chainAfter != chainBefore {
		t.Errorf("the probes reached the chain's final counter (%d → %d)", chainBefore, chainAfter)
	}
	// (c) again, firewall or not.
	expect(t, runOne(t, "network.egress-probe", noRoute), NotApplicable, "no route")

	// (d) Our table is there, but another table drops first: our counter
	// does not grow, so the probe proves nothing about the appliance.
	cmd := exec.Command("ip", "netns", "exec", host, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(foreignDeny)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	expect(t, runOne(t, "network.egress-probe", tg), Fail, "not by table inet qwen_appliance")
	// … and without our table at all, the same.
	sh(t, "ip", "netns", "exec", host, "nft", "delete", "table", "inet", "qwen_appliance")
	expect(t, runOne(t, "network.egress-probe", tg), Fail, "not by table inet qwen_appliance")
}

func TestListenersInNamespace(t *testing.T) {
	host, _ := netPair(t)
	var ln net.Listener
	must(t, inNetNS(host, func() (err error) { ln, err = net.Listen("tcp", "0.0.0.0:18443"); return err }))
	defer ln.Close()
	tg := &Target{State: &state.State{Firewall: state.Firewall{NetNS: host}}}
	expect(t, runOne(t, "network.listeners", tg), Fail, ":18443")
	tg.State.Gateway.Listen = []string{"0.0.0.0:18443"}
	expect(t, runOne(t, "network.listeners", tg), Pass, "expected: tcp [::]:18443")
}

func TestFirewallCheckInNamespace(t *testing.T) {
	host, _ := netPair(t)
	root := t.TempDir()
	st := &state.State{Firewall: state.Firewall{NetNS: host, Table: "inet qwen_appliance"}}
	tg := &Target{Root: root, State: st}
	nf, done, err := tg.netfilter()
	must(t, err)
	defer done()
	res, err := harden.Apply(context.Background(), nf, harden.Options{Policy: harden.EgressPolicy{APIPort: 8443, SSHPort: 22}, Root: harden.Root(root)})
	must(t, err)
	st.Firewall.RulesetSHA256 = res.SHA256
	expect(t, runOne(t, "network.firewall", tg), Pass, "policy drop")

	// Not enabled at boot: a reboot would come up open.
	must(t, os.Remove(harden.Root(root).BootUnitLink()))
	expect(t, runOne(t, "network.firewall", tg), Fail, "not enabled")
	must(t, os.Symlink(filepath.Join(harden.UnitDir, harden.FirewallUnit), harden.Root(root).BootUnitLink()))
	expect(t, runOne(t, "network.firewall", tg), Pass, "enabled=true")

	st.Firewall.RulesetSHA256 = strings.Repeat("0", 64)
	expect(t, runOne(t, "network.firewall", tg), Fail, "not the one install recorded")
	st.Firewall.RulesetSHA256 = res.SHA256

	sh(t, "ip", "netns", "exec", host, "nft", "add", "rule", "inet", "qwen_appliance", "output", "tcp", "dport", "443", "accept")
	expect(t, runOne(t, "network.firewall", tg), Fail, "differs from what was applied")

	sh(t, "ip", "netns", "exec", host, "nft", "delete", "table", "inet", "qwen_appliance")
	expect(t, runOne(t, "network.firewall", tg), Fail, "is not loaded")
}
