//go:build linux

package harden

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const dropWait = 400 * time.Millisecond

// serveTCP listens on addr inside ns and answers each line with "echo:" + line.
func serveTCP(t *testing.T, ns *netns, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.do(t, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					fmt.Fprintf(c, "echo:%s", line)
				}
			}()
		}
	}()
}

// serveUDP answers every datagram on addr inside ns with the same bytes.
func serveUDP(t *testing.T, ns *netns, addr string) {
	t.Helper()
	var pc net.PacketConn
	var err error
	ns.do(t, func() { pc, err = net.ListenPacket("udp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// tcpExchange connects from ns (optionally from a given source address) and
// sends one line; it returns nil only when the echo comes back.
func tcpExchange(t *testing.T, ns *netns, src, dst string) error {
	t.Helper()
	var c net.Conn
	var err error
	d := net.Dialer{Timeout: dropWait}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	ns.do(t, func() { c, err = d.Dial("tcp", dst) })
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != "echo:hello\n" {
		return fmt.Errorf("got %q", got)
	}
	return nil
}

// dnsQuery sends a DNS-shaped query for example.com from ns and waits for
// the echo.
func dnsQuery(t *testing.T, ns *netns, dst string) error {
	t.Helper()
	query := []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")
	var c net.Conn
	var err error
	ns.do(t, func() { c, err = net.Dial("udp", dst) })
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write(query); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(dropWait))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != string(query) {
		return errors.New("wrong answer")
	}
	return nil
}

func ping(ns *netns, addr string) error {
	out, err := ns.exec("ping", "-c1", "-W1", addr)
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(out))
	}
	return nil
}

func hostPort(h string, p int) string { return net.JoinHostPort(h, fmt.Sprint(p)) }

func mustWork(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: want it to work, got %v", what, err)
	}
}

// mustBeSilent wants err to be a timeout: the packet was dropped, not
// refused, so nothing answered at all.
func mustBeSilent(t *testing.T, what string, err error) {
	t.Helper()
	var ne net.Error
	if err == nil {
		t.Errorf("%s: want it dropped, but it went through", what)
	} else if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%s: want silence (a timeout), got %v", what, err)
	}
}

// mustBeDropped wants an outbound attempt stopped by the output chain: the
// sender sees EPERM (a datagram dropped on the way out) or a timeout.
func mustBeDropped(t *testing.T, what string, err error) {
	t.Helper()
	if errors.Is(err, syscall.EPERM) {
		return
	}
	mustBeSilent(t, what, err)
}

// eventually retries fn for a few seconds, for paths that need neighbour
// discovery to settle before the first packet gets through.
func eventually(fn func() error) error {
	var err error
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		if err = fn(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func nftList(t *testing.T, ns *netns, args ...string) string {
	t.Helper()
	out, err := ns.exec(append([]string{"nft"}, args...)...)
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestTraffic applies the firewall inside a "host" namespace and proves it
// with real packets to and from an "internet" namespace.
func TestTraffic(t *testing.T) {
	tp := newTopology(t)
	_, pingErr := exec.LookPath("ping")
	ctx := context.Background()

	for _, p := range []int{80, 514} {
		serveTCP(t, tp.inet, hostPort("::", p))
	}
	for _, p := range []int{53, 123} {
		serveUDP(t, tp.inet, hostPort("::", p))
	}
	for _, p := range []int{8443, 9000} {
		serveTCP(t, tp.host, hostPort("::", p))
	}
	serveTCP(t, tp.host, "127.0.0.1:7000")
	serveTCP(t, tp.host, "[::1]:7001")

	// Before: the path is open in both directions.
	mustWork(t, "before: host to internet tcp/80 over IPv4", eventually(func() error { return tcpExchange(t, tp.host, "", hostPort(inetV4, 80)) }))
	mustWork(t, "before: host to internet tcp/80 over IPv6", eventually(func() error { return tcpExchange(t, tp.host, "", hostPort(inetV6, 80)) }))
	mustWork(t, "before: internet to host over IPv6", eventually(func() error { return tcpExchange(t, tp.inet, inetV6Bad, hostPort(hostV6, 9000)) }))
	mustWork(t, "before: internet to host tcp/9000", tcpExchange(t, tp.inet, inetV4, hostPort(hostV4, 9000)))
	if pingErr == nil {
		mustWork(t, "before: ping", ping(tp.host, inetV4))
	}

	// A table of another owner, which must survive apply and remove.
	if out, err := nftStdin(tp.host, "table ip foreign {\n\tchain out {\n\t\ttype filter hook output priority 10; policy accept;\n\t\tcounter\n\t}\n}\n"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	foreignShape := func() string {
		s := nftList(t, tp.host, "list", "table", "ip", "foreign")
		// the counter counts; compare everything else
		return strings.Join(strings.Fields(stripCounters(s)), " ")
	}
	foreign := foreignShape()

	root := Root(t.TempDir())
	pol := EgressPolicy{
		APIPort:     8443,
		SSHPort:     22,
		ClientCIDRs: []netip.Prefix{netip.MustParsePrefix(inetV4 + "/32"), netip.MustParsePrefix(inetV6 + "/128")},
		Egress: []EgressRule{
			{Proto: "udp", Prefix: netip.MustParsePrefix(inetV4 + "/32"), Port: 123},
			{Proto: "tcp", Prefix: netip.MustParsePrefix(inetV6 + "/128"), Port: 514},
		},
	}
	k := tp.host.kernel(t)
	res, err := Apply(ctx, k, Options{Policy: pol, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed {
		t.Error("first apply reports no change")
	}

	// Outbound: TCP, UDP (DNS) and ICMP are dropped.
	mustBeDropped(t, "host to internet tcp/80 over IPv4", tcpExchange(t, tp.host, "", hostPort(inetV4, 80)))
	mustBeDropped(t, "host to internet tcp/80 over IPv6", tcpExchange(t, tp.host, "", hostPort(inetV6, 80)))
	mustBeDropped(t, "host to internet tcp/514 over IPv4 (only IPv6 is allowlisted)", tcpExchange(t, tp.host, "", hostPort(inetV4, 514)))
	mustBeDropped(t, "DNS query over IPv4", dnsQuery(t, tp.host, hostPort(inetV4, 53)))
	mustBeDropped(t, "DNS query over IPv6", dnsQuery(t, tp.host, hostPort(inetV6, 53)))
	mustBeDropped(t, "udp/123 to a host not allowlisted", dnsQuery(t, tp.host, hostPort(inetV4Bad, 123)))
	if pingErr == nil {
		if err := ping(tp.host, inetV4); err == nil {
			t.Error("ping over IPv4 went through")
		}
		if err := ping(tp.host, inetV6); err == nil {
			t.Error("ping over IPv6 went through")
		}
	} else {
		t.Log("ping not installed: ICMP not checked")
	}

	// The allowlist works, and replies to it flow back.
	mustWork(t, "allowlisted udp/123 over IPv4", dnsQuery(t, tp.host, hostPort(inetV4, 123)))
	mustWork(t, "allowlisted tcp/514 over IPv6", tcpExchange(t, tp.host, "", hostPort(inetV6, 514)))

	// Loopback works.
	mustWork(t, "loopback IPv4", tcpExchange(t, tp.host, "", "127.0.0.1:7000"))
	mustWork(t, "loopback IPv6", tcpExchange(t, tp.host, "", "[::1]:7001"))

	// Inbound: the API port answers only an allowed client; the rest is silent.
	mustWork(t, "API from allowed IPv4 client", tcpExchange(t, tp.inet, inetV4, hostPort(hostV4, 8443)))
	mustWork(t, "API from allowed IPv6 client", tcpExchange(t, tp.inet, inetV6, hostPort(hostV6, 8443)))
	mustBeSilent(t, "API from other IPv4 address", tcpExchange(t, tp.inet, inetV4Bad, hostPort(hostV4, 8443)))
	mustBeSilent(t, "API from other IPv6 address", tcpExchange(t, tp.inet, inetV6Bad, hostPort(hostV6, 8443)))
	mustBeSilent(t, "other listening port from allowed client", tcpExchange(t, tp.inet, inetV4, hostPort(hostV4, 9000)))
	mustBeSilent(t, "closed port from allowed client (no RST)", tcpExchange(t, tp.inet, inetV4, hostPort(hostV4, 9001)))
	mustBeSilent(t, "SSH port without admin CIDR", tcpExchange(t, tp.inet, inetV4, hostPort(hostV4, 22)))

	// Re-apply is idempotent.
	before := nftList(t, tp.host, "list", "table", "inet", TableName)
	st0, err := k.Live()
	if err != nil {
		t.Fatal(err)
	}
	res, err = Apply(ctx, k, Options{Policy: pol, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if res.Changed {
		t.Error("second apply replaced the table")
	}
	st1, err := k.Live()
	if err != nil {
		t.Fatal(err)
	}
	if after := nftList(t, tp.host, "list", "table", "inet", TableName); after != before || st1.Gen != st0.Gen {
		t.Errorf("re-apply changed the ruleset (generation %d -> %d):\n%s\nwas:\n%s", st0.Gen, st1.Gen, after, before)
	}
	status, err := Check(k, root)
	if err != nil {
		t.Fatal(err)
	}
	if !status.OK() {
		t.Errorf("status after apply: %v %v", status.Problems, status.Diff)
	}
	if got := foreignShape(); got != foreign {
		t.Errorf("foreign table changed by apply:\n%s\nwas:\n%s", got, foreign)
	}

	// Remove restores the previous state.
	if err := Remove(k, root); err != nil {
		t.Fatal(err)
	}
	if out := nftList(t, tp.host, "list", "tables"); strings.Contains(out, TableName) {
		t.Errorf("our table survived remove:\n%s", out)
	}
	if got := foreignShape(); got != foreign {
		t.Errorf("foreign table changed by remove:\n%s\nwas:\n%s", got, foreign)
	}
	mustWork(t, "after remove: host to internet tcp/80", tcpExchange(t, tp.host, "", hostPort(inetV4, 80)))
	mustWork(t, "after remove: internet to host tcp/9000", tcpExchange(t, tp.inet, inetV4Bad, hostPort(hostV4, 9000)))
}

func stripCounters(s string) string {
	joined := strings.Join(strings.Fields(s), " ")
	// "counter packets N bytes M" → "counter"
	for {
		i := strings.Index(joined, "counter packets ")
		if i < 0 {
			break
		}
		rest := strings.Fields(joined[i+len("counter packets "):])
		if len(rest) < 3 {
			break
		}
		joined = joined[:i] + "counter" + " " + strings.Join(rest[3:], " ")
	}
	return joined
}
