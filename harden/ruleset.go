package harden

import (
	"fmt"
	"net/netip"
	"strings"
)

// TableName is the only nftables table harden creates, changes or deletes,
// always in the inet family (IPv4 and IPv6).
const TableName = "qwen_appliance"

// Ruleset is a policy rendered once, so that the nft text written to disk
// and the netlink batch sent to the kernel cannot drift apart: each rule
// carries its nft spelling and the matches the kernel expressions are built
// from, the same ones nft itself generates for that spelling.
type Ruleset struct {
	Chains []Chain
}

// Chain is one base chain of the table; all have policy drop.
type Chain struct {
	Name  string // "input", "output" or "forward"
	Hook  string // the netfilter hook, same as Name
	Rules []Rule
}

// Rule is one accept rule, one that refuses a TCP connection with a reset
// (reject), or the counted drop that ends the output chain (drop).
type Rule struct {
	Comment string
	Text    string // nft syntax, without the comment
	matches []match
	reject  bool
	drop    bool // "counter drop": counts and drops what no rule accepted
}

// EgressDenied is the comment of the output chain's last rule, which counts
// every packet the appliance refuses to let leave (and drops it, as the
// chain's policy would). The egress probe reads its counter to tell the
// appliance's drop from any other reason a probe went unanswered.
const EgressDenied = "egress denied"

type matchKind int

const (
	matchIfname      matchKind = iota // iifname/oifname "NAME"
	matchEstablished                  // ct state established,related
	matchICMPv6                       // icmpv6 type T ip6 hoplimit 255
	matchAddr                         // ip/ip6 saddr/daddr PREFIX
	matchPort                         // tcp/udp dport N
	matchPortRange                    // tcp dport N-M
	matchCtNew                        // ct state new
	matchSkuid                        // meta skuid N
)

// match is one part of a rule, described portably; exprs_linux.go turns it
// into kernel expressions.
type match struct {
	kind   matchKind
	text   string
	out    bool // matchIfname: the output interface
	name   string
	icmp   byte
	prefix netip.Prefix
	dst    bool // matchAddr: destination address
	proto  string
	port   uint16
	last   uint16 // matchPortRange: the last port
	uid    uint32
}

func rule(comment string, ms ...match) Rule {
	var words []string
	for _, m := range ms {
		words = append(words, m.text)
	}
	words = append(words, "accept")
	return Rule{Comment: comment, Text: strings.Join(words, " "), matches: ms}
}

// dropRule counts and drops what ms match (all, when ms is empty).
func dropRule(comment string, ms ...match) Rule {
	var words []string
	for _, m := range ms {
		words = append(words, m.text)
	}
	words = append(words, "counter drop")
	return Rule{Comment: comment, Text: strings.Join(words, " "), matches: ms, drop: true}
}

// ProbeComment names the counted drop of one egress-probe address.
func ProbeComment(a netip.Addr) string { return "egress probe " + a.String() }

// rejectRule refuses what ms match with a TCP reset, so a local client
// that may not connect fails at once (connection refused) instead of
// waiting for a timeout. The matches must include a TCP port.
func rejectRule(comment string, ms ...match) Rule {
	var words []string
	for _, m := range ms {
		words = append(words, m.text)
	}
	words = append(words, "reject with tcp reset")
	return Rule{Comment: comment, Text: strings.Join(words, " "), matches: ms, reject: true}
}

// Build renders p into the table's chains. p must be valid.
func Build(p EgressPolicy) Ruleset {
	input := []Rule{
		rule("loopback", ifname(false, "lo")),
		rule("replies and related", ctEstablished()),
	}
	for _, t := range []struct {
		name string
		typ  byte
	}{{"nd-neighbor-solicit", 135}, {"nd-neighbor-advert", 136}, {"nd-router-advert", 134}} {
		input = append(input, rule("ipv6 neighbour discovery", icmpv6(t.name, t.typ)))
	}
	for _, c := range p.ClientCIDRs {
		input = append(input, rule(fmt.Sprintf("api from %s", c), addr(false, c), port("tcp", p.APIPort)))
	}
	for _, c := range p.AdminCIDRs {
		input = append(input, rule(fmt.Sprintf("ssh from %s", c), addr(false, c), port("tcp", p.SSHPort)))
	}

	// Only root and the listed users may open a connection to the
	// runtime's loopback ports; these rules come before loopback's accept.
	var output []Rule
	if a := p.Runtime; a != nil {
		on := func(more ...match) []match {
			return append([]match{ifname(true, "lo"), portRange(a.FirstPort, a.LastPort), ctNew()}, more...)
		}
		output = append(output, rule("runtime port: root", on(skuid(0))...))
		for _, u := range a.UIDs {
			output = append(output, rule(fmt.Sprintf("runtime port: uid %d", u), on(skuid(u))...))
		}
		output = append(output, rejectRule("runtime port: every other user", on()...))
	}
	output = append(output,
		rule("loopback", ifname(true, "lo")),
		rule("replies and related", ctEstablished()),
	)
	for _, t := range []struct {
		name string
		typ  byte
	}{{"nd-neighbor-solicit", 135}, {"nd-neighbor-advert", 136}, {"nd-router-solicit", 133}} {
		output = append(output, rule("ipv6 neighbour discovery", icmpv6(t.name, t.typ)))
	}
	for _, e := range p.Egress {
		output = append(output, rule("egress "+e.String(), addr(true, e.Prefix), port(e.Proto, e.Port)))
	}
	// Each probe address gets a counter of its own, so that verify credits
	// a probe to this table only when this rule dropped it, whatever else
	// the table drops meanwhile.
	for _, a := range p.ProbeTargets {
		output = append(output, dropRule(ProbeComment(a), addr(true, netip.PrefixFrom(a, a.BitLen()))))
	}
	output = append(output, dropRule(EgressDenied))
	return Ruleset{Chains: []Chain{
		{Name: "input", Hook: "input", Rules: input},
		{Name: "forward", Hook: "forward", Rules: nil},
		{Name: "output", Hook: "output", Rules: output},
	}}
}

func ifname(out bool, name string) match {
	word := "iifname"
	if out {
		word = "oifname"
	}
	return match{kind: matchIfname, text: fmt.Sprintf("%s %q", word, name), out: out, name: name}
}

func ctEstablished() match {
	return match{kind: matchEstablished, text: "ct state established,related"}
}

// icmpv6 matches one neighbour-discovery type with hop limit 255, which
// RFC 4861 requires, so routed packets can never pass as discovery.
func icmpv6(name string, typ byte) match {
	return match{kind: matchICMPv6, text: "icmpv6 type " + name + " ip6 hoplimit 255", icmp: typ}
}

// addr matches a source or destination prefix; /0 only checks the family.
func addr(dst bool, p netip.Prefix) match {
	fam, dir := "ip6", "saddr"
	if p.Addr().Is4() {
		fam = "ip"
	}
	if dst {
		dir = "daddr"
	}
	m := match{kind: matchAddr, prefix: p, dst: dst}
	switch {
	case p.Bits() == 0:
		m.text = "meta nfproto ipv6"
		if p.Addr().Is4() {
			m.text = "meta nfproto ipv4"
		}
	case p.IsSingleIP():
		m.text = fmt.Sprintf("%s %s %s", fam, dir, p.Addr())
	default:
		m.text = fmt.Sprintf("%s %s %s", fam, dir, p)
	}
	return m
}

// port matches a TCP or UDP destination port.
func port(proto string, n uint16) match {
	return match{kind: matchPort, text: fmt.Sprintf("%s dport %d", proto, n), proto: proto, port: n}
}

// portRange matches TCP destination ports first to last.
func portRange(first, last uint16) match {
	if first == last {
		return port("tcp", first)
	}
	return match{kind: matchPortRange, text: fmt.Sprintf("tcp dport %d-%d", first, last), proto: "tcp", port: first, last: last}
}

// ctNew matches the first packet of a connection: only opening one is
// restricted, so replies and the last packets of a closing connection
// (sent by sockets without an owner) pass as before.
func ctNew() match {
	return match{kind: matchCtNew, text: "ct state new"}
}

// skuid matches packets sent by a socket that uid owns.
func skuid(uid uint32) match {
	return match{kind: matchSkuid, text: fmt.Sprintf("meta skuid %d", uid), uid: uid}
}
