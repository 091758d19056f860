package verify

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
)

func init() {
	register(
		Check{
			ID: "network.egress-probe", Title: "TCP, UDP and ICMP to the probe addresses cannot leave the host",
			Severity: Critical, Controls: []string{"SC-7", "SC-7(5)", "AC-4"},
			Rationale:   "An active test that the deny-by-default egress policy works now, not just that rules exist.",
			Remediation: "Re-apply the firewall with 'qwen-appliance harden apply'; find what opened the path (another table, a changed ruleset).",
			Run:         checkEgress,
		},
		Check{
			ID: "network.listeners", Title: "no socket listens beyond loopback except the expected ones",
			Severity: High, Controls: []string{"CM-7", "SC-7"},
			Rationale:   "An inference server or debug port listening on a public address bypasses the gateway's authentication and audit.",
			Remediation: "Stop the process named in the evidence or bind it to 127.0.0.1; only the gateway may listen beyond loopback.",
			Run:         checkListeners,
		},
	)
}

// probeTimeout bounds each probe; a blocked packet fails at once with EPERM.
const probeTimeout = 2 * time.Second

// probe tries one protocol to addr and says whether the packet left the host.
// With an nftables output policy of drop, the kernel refuses locally
// generated packets with EPERM, so "sent" means the firewall let it out.
func probe(ctx context.Context, proto string, addr netip.Addr) (left bool, detail string) {
	switch proto {
	case "tcp":
		d := net.Dialer{Timeout: probeTimeout}
		c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, 443).String())
		if err == nil {
			c.Close()
			return true, "tcp/443 connected"
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return true, "tcp/443 reached the peer (connection refused by it)"
		}
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return false, "tcp/443 blocked: " + err.Error()
		}
		return false, "tcp/443 blocked (no answer): " + err.Error()
	case "udp":
		c, err := net.Dial("udp", netip.AddrPortFrom(addr, 53).String())
		if err != nil {
			return false, "udp/53 socket: " + err.Error()
		}
		defer c.Close()
		// A minimal DNS query for "." NS.
		_, err = c.Write([]byte{0x51, 0x41, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1})
		if err != nil {
			return false, "udp/53 blocked: " + err.Error()
		}
		return true, "udp/53 datagram sent"
	case "icmp":
		path, err := exec.LookPath("ping")
		if err != nil {
			return false, "icmp not probed: ping is not installed"
		}
		out, err := exec.CommandContext(ctx, path, "-n", "-c", "1", "-W", "1", addr.String()).CombinedOutput()
		text := strings.TrimSpace(string(out))
		switch {
		case err == nil:
			return true, "icmp echo answered"
		case strings.Contains(text, "not permitted"):
			return false, "icmp blocked: operation not permitted"
		}
		// The kernel does not report a dropped echo to ping: no answer is
		// the evidence, from a peer that answers when unfiltered.
		return false, "icmp echo unanswered"
	}
	return false, "unknown protocol " + proto
}

// dropCounter reads the appliance's counted drops by rule comment
// (harden.Kernel).
type dropCounter interface {
	Drops(comment string) (uint64, error)
}

// rtnUnicast is the kernel's RTN_UNICAST: a route packets really leave by.
const rtnUnicast = 1

// checkEgress probes each probe address over TCP, UDP and ICMP. A probe
// counts as blocked only when the appliance's own rules dropped it: the
// counter of the address's own counted drop in table inet qwen_appliance
// grew while it ran (in tables applied before those existed, the final
// "egress denied" rule's, which other dropped traffic grows too). Before probing, the kernel must show a route to the address:
// without one every probe fails with "network is unreachable", firewall or
// not, so the check is not applicable rather than passed.
func checkEgress(ctx context.Context, t *Target) Outcome {
	if t.State == nil || len(t.State.Firewall.ProbeTargets) == 0 {
		return notApplicable("no probe addresses configured (install --probe ADDR, or verify --probe ADDR)")
	}
	var evs []Evidence
	var ctr dropCounter
	if nf, done, err := t.netfilter(); err != nil {
		evs = append(evs, ev("drop counter", "unavailable: %v", err))
	} else {
		defer done()
		ctr, _ = nf.(dropCounter)
	}
	counter := func(comment string) (uint64, error) {
		if ctr == nil {
			return 0, harden.ErrNoCounter
		}
		return ctr.Drops(comment)
	}
	if n, err := counter(harden.EgressDenied); err != nil {
		evs = append(evs, ev("drop counter", "%v", err))
	} else {
		evs = append(evs, ev("drop counter", "table inet %s rule %q: %d packets so far", harden.TableName, harden.EgressDenied, n))
	}
	leaked, unproven, blocked, routed := 0, 0, 0, 0
	err := inNetNS(t.State.Firewall.NetNS, func() error {
		for _, target := range t.State.Firewall.ProbeTargets {
			addr, err := netip.ParseAddr(target)
			if err != nil {
				return fmt.Errorf("probe address %q: %w", target, err)
			}
			r, err := routeTo(addr)
			switch {
			case err != nil:
				evs = append(evs, ev("route "+target, "none (%v): not probed", err))
				continue
			case r.Type != rtnUnicast:
				evs = append(evs, ev("route "+target, "route type %d, not a route out: not probed", r.Type))
				continue
			}
			routed++
			evs = append(evs, ev("route "+target, "%s", r))
			rule := harden.ProbeComment(addr)
			if _, err := counter(rule); errors.Is(err, harden.ErrNoCounter) {
				rule = harden.EgressDenied
				evs = append(evs, ev("counter "+target, "the table has no counted drop for this address (applied before those existed): the whole chain's counter is used, which other dropped traffic grows too"))
			}
			drops := func() (uint64, error) { return counter(rule) }
			for _, proto := range []string{"tcp", "udp", "icmp"} {
				before, errB := drops()
				left, detail := probe(ctx, proto, addr)
				after, errA := drops()
				switch {
				case left:
					leaked++
				case strings.HasSuffix(detail, "not installed"):
				case errB == nil && errA == nil && after > before:
					blocked++
					detail += fmt.Sprintf("; dropped by the appliance (rule %q counted %d → %d)", rule, before, after)
				default:
					unproven++
					detail += "; but not by the appliance's rules (its drop counter did not grow): something else stopped it"
				}
				evs = append(evs, ev(proto+" "+target, "%s", detail))
			}
		}
		return nil
	})
	if err != nil {
		return errored(err, evs...)
	}
	switch {
	case routed == 0:
		return Outcome{Status: NotApplicable, Evidence: evs,
			Message: "no route to any probe address: without one a probe cannot tell the firewall from a missing route (give a --probe address the host has a route to)"}
	case leaked > 0:
		return fail(fmt.Sprintf("%d probe(s) left the host", leaked), evs...)
	case unproven > 0:
		return fail(fmt.Sprintf("%d probe(s) were stopped, but not by table inet %s (its drop counter did not grow): the appliance's egress deny is not what holds", unproven, harden.TableName), evs...)
	case blocked == 0:
		return Outcome{Status: NotApplicable, Evidence: evs, Message: "no probe could run (see the evidence)"}
	}
	return pass(fmt.Sprintf("every probe was dropped by table inet %s (%d counted)", harden.TableName, blocked), evs...)
}

// Listener is a listening socket read from /proc/net.
type Listener struct {
	Proto string
	Addr  netip.AddrPort
}

func (l Listener) String() string { return l.Proto + " " + l.Addr.String() }

// listeners reads TCP sockets in LISTEN state and bound UDP sockets from the
// calling thread's network namespace.
func listeners() ([]Listener, error) {
	var out []Listener
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open("/proc/thread-self/net/" + proto)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		ls, err := parseProcNet(f, strings.TrimSuffix(proto, "6"))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("/proc/net/%s: %w", proto, err)
		}
		out = append(out, ls...)
	}
	return out, nil
}

// parseProcNet reads the /proc/net/{tcp,udp}{,6} table format.
func parseProcNet(f *os.File, proto string) ([]Listener, error) {
	var out []Listener
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		// TCP state 0A is LISTEN; UDP sockets in state 07 (CLOSE) are bound.
		if (proto == "tcp" && fields[3] != "0A") || (proto == "udp" && fields[3] != "07") {
			continue
		}
		ap, err := parseHexAddrPort(fields[1])
		if err != nil {
			return nil, err
		}
		out = append(out, Listener{Proto: proto, Addr: ap})
	}
	return out, sc.Err()
}

// parseHexAddrPort decodes "0100007F:1F90" (IPv4 or IPv6, in host byte order
// per 32-bit word as the kernel prints it).
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(host)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 { // each 32-bit word is little-endian
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(p)), nil
}

// normalize maps the IPv4 and IPv6 wildcard addresses to one, since a Go
// program listening on 0.0.0.0 gets a dual-stack [::] socket.
func normalize(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().IsUnspecified() {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), ap.Port())
	}
	return ap
}

// expectedListeners lists the addresses install recorded for its services.
func (t *Target) expectedListeners() map[netip.AddrPort]bool {
	want := map[netip.AddrPort]bool{}
	if t.State == nil {
		return want
	}
	all := append([]string{}, t.State.Gateway.Listen...)
	all = append(all, t.State.Runtime.Listen...)
	for _, s := range t.State.Services {
		all = append(all, s.Listen...)
	}
	for _, a := range all {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			want[normalize(ap)] = true
		}
	}
	return want
}

func checkListeners(_ context.Context, t *Target) Outcome {
	var ls []Listener
	netns := ""
	if t.State != nil {
		netns = t.State.Firewall.NetNS
	}
	err := inNetNS(netns, func() (err error) { ls, err = listeners(); return err })
	if err != nil {
		return errored(err)
	}
	want := t.expectedListeners()
	sort.Slice(ls, func(i, j int) bool { return ls[i].String() < ls[j].String() })
	var evs []Evidence
	var unexpected []string
	for _, l := range ls {
		switch {
		case want[normalize(l.Addr)]:
			evs = append(evs, ev("expected", "%s", l))
		case l.Addr.Addr().IsLoopback():
			evs = append(evs, ev("loopback", "%s", l))
		default:
			unexpected = append(unexpected, l.String())
			evs = append(evs, ev("unexpected", "%s", l))
		}
	}
	if len(unexpected) > 0 {
		return fail("listening beyond loopback: "+strings.Join(unexpected, ", "), evs...)
	}
	return pass(fmt.Sprintf("%d listening sockets, none beyond loopback but the expected ones", len(ls)), evs...)
}
