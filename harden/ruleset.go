package harden

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the only nftables table harden creates, changes or deletes,
// always in the inet family (IPv4 and IPv6).
const TableName = "qwen_appliance"

// Ruleset is a policy rendered once, so that the nft text written to disk
// and the netlink batch sent to the kernel cannot drift apart: each rule
// carries both its nft spelling and the expressions nft itself generates for
// that spelling.
type Ruleset struct {
	Chains []Chain
}

// Chain is one base chain of the table; all have policy drop.
type Chain struct {
	Name  string // "input", "output" or "forward"
	Hook  string // the netfilter hook, same as Name
	Rules []Rule
}

// Rule is one accept rule: the nft syntax and the kernel expressions.
type Rule struct {
	Comment string
	Text    string // without the comment
	Exprs   []expr.Any
}

// match is one part of a rule: text and the expressions behind it.
type match struct {
	text  string
	exprs []expr.Any
}

func rule(comment string, ms ...match) Rule {
	var words []string
	var exprs []expr.Any
	for _, m := range ms {
		words = append(words, m.text)
		exprs = append(exprs, m.exprs...)
	}
	words = append(words, "accept")
	exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictAccept})
	return Rule{Comment: comment, Text: strings.Join(words, " "), Exprs: exprs}
}

// Build renders p into the table's chains. p must be valid.
func Build(p EgressPolicy) Ruleset {
	input := []Rule{
		rule("loopback", ifname("iifname", expr.MetaKeyIIFNAME, "lo")),
		rule("replies and related", ctEstablished()),
	}
	for _, t := range []struct {
		name string
		typ  byte
	}{{"nd-neighbor-solicit", 135}, {"nd-neighbor-advert", 136}, {"nd-router-advert", 134}} {
		input = append(input, rule("ipv6 neighbour discovery", icmpv6(t.name, t.typ)))
	}
	for _, c := range p.ClientCIDRs {
		input = append(input, rule(fmt.Sprintf("api from %s", c), addr("saddr", c), port("tcp", p.APIPort)))
	}
	for _, c := range p.AdminCIDRs {
		input = append(input, rule(fmt.Sprintf("ssh from %s", c), addr("saddr", c), port("tcp", p.SSHPort)))
	}

	output := []Rule{
		rule("loopback", ifname("oifname", expr.MetaKeyOIFNAME, "lo")),
		rule("replies and related", ctEstablished()),
	}
	for _, t := range []struct {
		name string
		typ  byte
	}{{"nd-neighbor-solicit", 135}, {"nd-neighbor-advert", 136}, {"nd-router-solicit", 133}} {
		output = append(output, rule("ipv6 neighbour discovery", icmpv6(t.name, t.typ)))
	}
	for _, e := range p.Egress {
		output = append(output, rule("egress "+e.String(), addr("daddr", e.Prefix), port(e.Proto, e.Port)))
	}
	return Ruleset{Chains: []Chain{
		{Name: "input", Hook: "input", Rules: input},
		{Name: "forward", Hook: "forward", Rules: nil},
		{Name: "output", Hook: "output", Rules: output},
	}}
}

func ifname(word string, key expr.MetaKey, name string) match {
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	return match{
		text: fmt.Sprintf("%s %q", word, name),
		exprs: []expr.Any{
			&expr.Meta{Key: key, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data},
		},
	}
}

func ctEstablished() match {
	return match{
		text: "ct state established,related",
		exprs: []expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
				Xor:  binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		},
	}
}

func nfproto(v4 bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV6)
	if v4 {
		proto = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// icmpv6 matches one neighbour-discovery type with hop limit 255, which
// RFC 4861 requires, so routed packets can never pass as discovery.
func icmpv6(name string, typ byte) match {
	exprs := append(nfproto(false), l4proto(unix.IPPROTO_ICMPV6)...)
	exprs = append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 7, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{255}},
	)
	return match{text: "icmpv6 type " + name + " ip6 hoplimit 255", exprs: exprs}
}

// addr matches a source or destination prefix the way nft compiles it:
// whole bytes are compared directly, a partial byte needs a mask, and /0
// only checks the address family.
func addr(dir string, p netip.Prefix) match {
	v4 := p.Addr().Is4()
	fam, offset := "ip6", uint32(8) // IPv6 source at 8, destination at 24
	if v4 {
		fam, offset = "ip", 12 // IPv4 source at 12, destination at 16
	}
	if dir == "daddr" {
		if v4 {
			offset = 16
		} else {
			offset = 24
		}
	}
	exprs := nfproto(v4)
	bits, full := p.Bits(), p.Addr().BitLen()
	if bits == 0 {
		return match{text: "meta nfproto ipv" + map[bool]string{true: "4", false: "6"}[v4], exprs: exprs}
	}
	text := fmt.Sprintf("%s %s %s", fam, dir, p)
	if bits == full {
		text = fmt.Sprintf("%s %s %s", fam, dir, p.Addr())
	}
	raw := p.Addr().AsSlice()
	if bits%8 == 0 {
		n := uint32(bits / 8)
		exprs = append(exprs,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: raw[:n]})
		return match{text: text, exprs: exprs}
	}
	mask := make([]byte, len(raw))
	for i := 0; i < bits; i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	exprs = append(exprs,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(len(raw))},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(raw)), Mask: mask, Xor: make([]byte, len(raw))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: raw})
	return match{text: text, exprs: exprs}
}

// port matches a TCP or UDP destination port.
func port(proto string, n uint16) match {
	num := byte(unix.IPPROTO_TCP)
	if proto == "udp" {
		num = unix.IPPROTO_UDP
	}
	be := make([]byte, 2)
	binary.BigEndian.PutUint16(be, n)
	exprs := append(l4proto(num),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be})
	return match{text: fmt.Sprintf("%s dport %d", proto, n), exprs: exprs}
}
