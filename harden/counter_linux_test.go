//go:build linux

package harden

import (
	"errors"
	"net/netip"
	"testing"
)

// TestEgressDrops: the counted drop at the end of the output chain counts
// what the appliance refuses to let out, and nothing it lets out.
func TestEgressDrops(t *testing.T) {
	requireNetns(t)
	ns := newNetns(t, "ctr")
	// No IPv6 on the links: their neighbour discovery and multicast
	// reports would be counted too, at moments the test does not choose.
	if out, err := ns.exec("sh", "-c", "echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6"); err != nil {
		t.Fatalf("disable IPv6: %v: %s", err, out)
	}
	ns.ip(t, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.ip(t, "addr", "add", "10.77.0.1/24", "dev", "v0")
	ns.ip(t, "link", "set", "v0", "up")
	ns.ip(t, "link", "set", "v1", "up")
	k := ns.kernel(t)
	if _, err := k.EgressDrops(); !errors.Is(err, ErrNoCounter) {
		t.Fatalf("EgressDrops with no table: %v, want ErrNoCounter", err)
	}
	send := func(port string) error {
		_, err := ns.exec("bash", "-c", "echo x >/dev/udp/10.77.0.2/"+port)
		return err
	}
	if err := send("53"); err != nil {
		t.Fatalf("without the firewall a datagram leaves: %v", err)
	}
	st, err := k.Live()
	if err != nil {
		t.Fatal(err)
	}
	p := EgressPolicy{APIPort: 8443, SSHPort: 22, Egress: []EgressRule{{Proto: "udp", Prefix: netip.MustParsePrefix("10.77.0.2/32"), Port: 123}}}
	if err := k.Replace(st.Gen, Build(p).Table()); err != nil {
		t.Fatal(err)
	}
	if n, err := k.EgressDrops(); err != nil || n != 0 {
		t.Fatalf("fresh table: %d drops, %v", n, err)
	}
	if err := send("53"); err == nil {
		t.Fatal("a datagram to udp/53 left through the firewall")
	}
	if err := send("123"); err != nil { // allowed egress: not counted
		t.Fatalf("allowed udp/123: %v", err)
	}
	if n, err := k.EgressDrops(); err != nil || n != 1 {
		t.Errorf("after one refused datagram: %d drops, %v; want 1", n, err)
	}
	// The counter does not make the live table differ from the intended one.
	st, err = k.Live()
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(st.Table, Build(p).Table()); len(d) > 0 {
		t.Errorf("a counted packet made the table drift: %v", d)
	}
}

// TestProbeDrops: a probe address's counted drop counts the packets to that
// address only; other refused traffic grows the chain's final counter, not
// the probe's, so verify cannot credit unrelated drops to a probe.
func TestProbeDrops(t *testing.T) {
	requireNetns(t)
	ns := newNetns(t, "prb")
	if out, err := ns.exec("sh", "-c", "echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6"); err != nil {
		t.Fatalf("disable IPv6: %v: %s", err, out)
	}
	ns.ip(t, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	ns.ip(t, "addr", "add", "10.78.0.1/24", "dev", "v0")
	ns.ip(t, "link", "set", "v0", "up")
	ns.ip(t, "link", "set", "v1", "up")
	k := ns.kernel(t)
	probe := netip.MustParseAddr("10.78.0.2")
	st, err := k.Live()
	if err != nil {
		t.Fatal(err)
	}
	p := EgressPolicy{APIPort: 8443, SSHPort: 22, ProbeTargets: []netip.Addr{probe}}
	if err := k.Replace(st.Gen, Build(p).Table()); err != nil {
		t.Fatal(err)
	}
	send := func(addr string) { ns.exec("bash", "-c", "echo x >/dev/udp/"+addr+"/53") }
	send("10.78.0.3") // unrelated traffic the table refuses
	if n, err := k.Drops(ProbeComment(probe)); err != nil || n != 0 {
		t.Fatalf("probe counter after unrelated traffic: %d, %v; want 0", n, err)
	}
	if n, err := k.EgressDrops(); err != nil || n != 1 {
		t.Fatalf("chain counter after unrelated traffic: %d, %v; want 1", n, err)
	}
	send("10.78.0.2")
	if n, err := k.Drops(ProbeComment(probe)); err != nil || n != 1 {
		t.Fatalf("probe counter after a probe: %d, %v; want 1", n, err)
	}
	if n, _ := k.EgressDrops(); n != 1 {
		t.Fatalf("the probe reached the chain's final counter (%d): its own rule must come first", n)
	}
	if _, err := k.Drops(ProbeComment(netip.MustParseAddr("10.78.0.9"))); !errors.Is(err, ErrNoCounter) {
		t.Fatalf("an address without a rule: %v, want ErrNoCounter", err)
	}
}
