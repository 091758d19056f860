package harden

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultAPIPort is the gateway's TLS port when the operator names none.
const DefaultAPIPort = 8443

// DefaultSSHPort is the admin SSH port opened to AdminCIDRs.
const DefaultSSHPort = 22

// EgressPolicy is what the firewall lets through; everything else is dropped.
type EgressPolicy struct {
	APIPort     uint16         `json:"apiPort"`               // inbound TCP port of the gateway
	ClientCIDRs []netip.Prefix `json:"clientCIDRs,omitempty"` // who may reach APIPort
	AdminCIDRs  []netip.Prefix `json:"adminCIDRs,omitempty"`  // who may reach SSHPort
	SSHPort     uint16         `json:"sshPort"`
	Egress      []EgressRule   `json:"egress,omitempty"` // the only new outbound flows allowed
	// Runtime, when set, keeps every local user but root and the listed
	// ones off the inference server's loopback ports.
	Runtime *RuntimeAccess `json:"runtime,omitempty"`
	// ProbeTargets are the addresses verify's egress probe sends to; each
	// gets a counted drop of its own, the probe's evidence.
	ProbeTargets []netip.Addr `json:"probeTargets,omitempty"`
}

// The loopback ports install gives inference servers: one per release that
// runs at the same time (two during an upgrade or rollback), all covered
// by the RuntimeAccess rule. They lie below the kernel's ephemeral range,
// so no client socket is ever given one.
const (
	RuntimePortFirst = 11434
	RuntimePortLast  = 11443
)

// RuntimeAccess says who may open TCP connections to the runtime's ports on
// loopback: root (who can remove the table anyway, and whose verify asks
// the runtime which models it serves) and UIDs: the gateway's, and the
// runtime's own (its supervisor imports the model and checks readiness
// through the server's API). Everyone else is refused with a TCP reset.
// Ollama has no Unix socket listener, so the socket owner (meta skuid) is
// what the kernel can check.
type RuntimeAccess struct {
	FirstPort uint16   `json:"firstPort"`
	LastPort  uint16   `json:"lastPort"`
	UIDs      []uint32 `json:"uids"`
}

// EgressRule is one allowlisted outbound destination, written PROTO:CIDR:PORT
// on the command line, such as udp:10.0.0.5/32:123 for a local NTP server.
type EgressRule struct {
	Proto  string       `json:"proto"` // "tcp" or "udp"
	Prefix netip.Prefix `json:"prefix"`
	Port   uint16       `json:"port"`
}

// String returns the rule in the PROTO:CIDR:PORT form ParseEgress reads.
func (r EgressRule) String() string {
	return fmt.Sprintf("%s:%s:%d", r.Proto, r.Prefix, r.Port)
}

// ParseEgress reads one PROTO:CIDR:PORT allowlist entry. The CIDR may be an
// IPv6 prefix (the protocol is before the first colon and the port after the
// last), and a bare address means that one host. Errors quote the entry.
func ParseEgress(s string) (EgressRule, error) {
	bad := func(format string, args ...any) (EgressRule, error) {
		return EgressRule{}, fmt.Errorf("egress entry %q: %s (want PROTO:CIDR:PORT, e.g. udp:10.0.0.5/32:123)", s, fmt.Sprintf(format, args...))
	}
	first, last := strings.IndexByte(s, ':'), strings.LastIndexByte(s, ':')
	if first < 0 || first == last {
		return bad("needs three parts separated by ':'")
	}
	proto, cidr, port := strings.ToLower(s[:first]), s[first+1:last], s[last+1:]
	if proto != "tcp" && proto != "udp" {
		return bad("protocol %q is not tcp or udp", s[:first])
	}
	cidr = strings.TrimSuffix(strings.TrimPrefix(cidr, "["), "]")
	p, err := ParsePrefix(cidr)
	if err != nil {
		return bad("%v", err)
	}
	n, err := parsePort(port)
	if err != nil {
		return bad("%v", err)
	}
	return EgressRule{Proto: proto, Prefix: p, Port: n}, nil
}

// ParsePrefix reads a CIDR or a bare address (one host). The prefix must have
// no host bits set, so that what is written is what is matched.
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write IPv4-mapped prefixes as IPv4", s)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

// Validate reports every problem with p, each naming the field at fault.
func (p EgressPolicy) Validate() error {
	var errs []error
	if p.APIPort == 0 {
		errs = append(errs, errors.New("api port must be 1 to 65535"))
	}
	if len(p.AdminCIDRs) > 0 && p.SSHPort == 0 {
		errs = append(errs, errors.New("ssh port must be 1 to 65535 when admin CIDRs are given"))
	}
	check := func(what string, ps []netip.Prefix) {
		for _, c := range ps {
			if !c.IsValid() || c.Masked() != c || c.Addr().Is4In6() || c.Addr().Zone() != "" {
				errs = append(errs, fmt.Errorf("%s %s is not a canonical CIDR", what, c))
			}
		}
	}
	check("client CIDR", p.ClientCIDRs)
	check("admin CIDR", p.AdminCIDRs)
	for _, r := range p.Egress {
		if r.Proto != "tcp" && r.Proto != "udp" {
			errs = append(errs, fmt.Errorf("egress %s: protocol must be tcp or udp", r))
		}
		if r.Port == 0 {
			errs = append(errs, fmt.Errorf("egress %s: port must be 1 to 65535", r))
		}
		check("egress", []netip.Prefix{r.Prefix})
	}
	for _, a := range p.ProbeTargets {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			errs = append(errs, fmt.Errorf("probe target %s is not a plain IP address", a))
		}
	}
	if a := p.Runtime; a != nil {
		if a.FirstPort == 0 || a.LastPort < a.FirstPort {
			errs = append(errs, fmt.Errorf("runtime ports %d-%d: want 1 to 65535, first not above last", a.FirstPort, a.LastPort))
		}
		if len(a.UIDs) == 0 {
			errs = append(errs, errors.New("runtime access names no uid: the gateway could not reach the runtime"))
		}
		for _, u := range a.UIDs {
			if u == 0 {
				errs = append(errs, errors.New("runtime access: uid 0 is always allowed; list service users only"))
			}
		}
	}
	return errors.Join(errs...)
}

// Admits reports whether p lets a new TCP connection from addr reach port,
// the question anti-lockout asks about the operator's own SSH session.
func (p EgressPolicy) Admits(addr netip.Addr, port uint16) bool {
	addr = addr.Unmap()
	if port == p.SSHPort {
		for _, c := range p.AdminCIDRs {
			if c.Contains(addr) {
				return true
			}
		}
	}
	if port == p.APIPort {
		for _, c := range p.ClientCIDRs {
			if c.Contains(addr) {
				return true
			}
		}
	}
	return false
}
