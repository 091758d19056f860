//go:build linux

package harden

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/google/nftables"
)

func testPolicy() EgressPolicy {
	return EgressPolicy{
		APIPort:     8443,
		SSHPort:     22,
		ClientCIDRs: []netip.Prefix{netip.MustParsePrefix("10.200.1.2/32"), netip.MustParsePrefix("fd00:200:1::2/128"), netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("172.16.0.0/13")},
		AdminCIDRs:  []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00:1::/61")},
		Egress: []EgressRule{
			{Proto: "udp", Prefix: netip.MustParsePrefix("10.200.1.2/32"), Port: 123},
			{Proto: "tcp", Prefix: netip.MustParsePrefix("fd00:200:1::2/128"), Port: 514},
			{Proto: "udp", Prefix: netip.MustParsePrefix("0.0.0.0/0"), Port: 67},
		},
		Runtime: &RuntimeAccess{FirstPort: RuntimePortFirst, LastPort: RuntimePortLast, UIDs: []uint32{999, 998}},
	}
}

// TestKernelMatchesNft proves the two renderings agree: the text loaded by
// nft itself reads back as exactly the expressions we send over netlink, and
// what we send lists as exactly our text.
func TestKernelMatchesNft(t *testing.T) {
	requireNetns(t)
	rs := Build(testPolicy())

	ns := newNetns(t, "nft")
	if out, err := nftStdin(ns, rs.Text()); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	k := ns.kernel(t)
	st, err := k.Live()
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(st.Table, rs.Table()); len(d) > 0 {
		t.Errorf("nft -f of our text differs from our netlink rules:\n%s", strings.Join(d, "\n"))
	}

	ns2 := newNetns(t, "nl")
	k2 := ns2.kernel(t)
	st2, err := k2.Live()
	if err != nil {
		t.Fatal(err)
	}
	if st2.Table != nil {
		t.Fatal("fresh namespace has our table")
	}
	if err := k2.Replace(st2.Gen, rs.Table()); err != nil {
		t.Fatal(err)
	}
	listed, err := ns2.exec("nft", "list", "table", "inet", TableName)
	if err != nil {
		t.Fatalf("%v: %s", err, listed)
	}
	// nft lists what the counted drop counted; the rules file does not.
	if stripCounters(listed) != stripCounters(rs.tableText()) {
		t.Errorf("nft list table after netlink apply:\n%s\nwant:\n%s", listed, rs.tableText())
	}
}

func TestReplaceCompareAndSwap(t *testing.T) {
	requireNetns(t)
	ns := newNetns(t, "cas")
	k := ns.kernel(t)
	st, err := k.Live()
	if err != nil {
		t.Fatal(err)
	}
	if o, err := ns.exec("nft", "add", "table", "ip", "other"); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	err = k.Replace(st.Gen, Build(testPolicy()).Table())
	if !errors.Is(err, ErrConcurrentChange) {
		t.Fatalf("stale generation: got %v, want ErrConcurrentChange", err)
	}
	if o, _ := ns.exec("nft", "list", "tables"); strings.Contains(o, TableName) {
		t.Fatalf("stale batch left our table behind:\n%s", o)
	}
	st, err = k.Live()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Replace(st.Gen, Build(testPolicy()).Table()); err != nil {
		t.Fatalf("fresh generation: %v", err)
	}
}

func TestConfirmWindowKernel(t *testing.T) {
	requireNetns(t)
	confirmWindow(t, newNetns(t, "confirm").kernel(t))
}

// TestReplaceFailsAtomically sends a batch the kernel must reject halfway
// (a chain of an unknown type after valid rules) and checks that the table
// from before is untouched: one batch, all or nothing.
func TestReplaceFailsAtomically(t *testing.T) {
	requireNetns(t)
	ns := newNetns(t, "atomic")
	k := ns.kernel(t)
	st, _ := k.Live()
	good := Build(testPolicy()).Table()
	if err := k.Replace(st.Gen, good); err != nil {
		t.Fatal(err)
	}
	before := nftList(t, ns, "list", "table", "inet", TableName)
	bad := Build(simplePolicy()).Table()
	bad.Chains = append(bad.Chains, TableChain{Name: "broken", Hook: "output", Type: "no-such-type", Policy: "drop"})
	st, _ = k.Live()
	if err := k.Replace(st.Gen, bad); err == nil {
		t.Fatal("kernel accepted a chain of unknown type")
	}
	if after := nftList(t, ns, "list", "table", "inet", TableName); after != before {
		t.Fatalf("failed batch changed the table:\n%s\nwas:\n%s", after, before)
	}
}

// BenchmarkReplace measures one compare-and-swap batch (read generation and
// table, send, wait for acks) for a 70-rule table, alternating two policies
// so every batch is a real change. scripts/bench/harden.sh compares the
// whole CLI against nft -f.
func BenchmarkReplace(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to create a network namespace")
	}
	name := "qa-bench-" + strconv.Itoa(os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Skipf("ip netns add: %v %s", err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		b.Fatal(err)
	}
	k := NewKernel(c)
	var tables [2]*Table
	for i := range tables {
		p := EgressPolicy{APIPort: uint16(8443 + i), SSHPort: 22}
		for j := 1; j <= 20; j++ {
			p.ClientCIDRs = append(p.ClientCIDRs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j), 0, 0}), 16))
		}
		for j := 1; j <= 40; j++ {
			p.Egress = append(p.Egress, EgressRule{Proto: "udp", Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(j), 1}), 32), Port: 123})
		}
		tables[i] = Build(p).Table()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := swap(k, tables[i%2]); err != nil {
			b.Fatal(err)
		}
	}
}
