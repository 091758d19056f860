package harden

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestParseEgress(t *testing.T) {
	good := map[string]string{
		"udp:10.0.0.5/32:123":      "udp:10.0.0.5/32:123",
		"UDP:10.0.0.5:123":         "udp:10.0.0.5/32:123",
		"tcp:fd00::1/128:514":      "tcp:fd00::1/128:514",
		"tcp:[fd00::/64]:6514":     "tcp:fd00::/64:6514",
		"tcp:fd00::53:53":          "tcp:fd00::53/128:53",
		"udp:0.0.0.0/0:67":         "udp:0.0.0.0/0:67",
		"tcp:192.168.10.0/24:8080": "tcp:192.168.10.0/24:8080",
	}
	for in, want := range good {
		r, err := ParseEgress(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("%s: got %s, want %s", in, r, want)
		}
	}
	bad := map[string]string{
		"":                          "three parts",
		"udp:10.0.0.5":              "three parts",
		"icmp:10.0.0.5/32:1":        "not tcp or udp",
		"udp:10.0.0.5/33:123":       "not a CIDR",
		"udp:10.0.0.1/8:123":        "host bits",
		"udp:10.0.0.5/32:0":         "port",
		"udp:10.0.0.5/32:70000":     "port",
		"udp:10.0.0.5/32:ntp":       "port",
		"udp:example.com:53":        "not an IP",
		"udp:fe80::1%eth0:53":       "not an IP",
		"udp:::ffff:1.2.3.4/128:53": "IPv4-mapped",
	}
	for in, want := range bad {
		_, err := ParseEgress(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), in) {
			t.Errorf("%q: got %v, want an error containing %q and the entry", in, err, want)
		}
	}
}

func TestParseSession(t *testing.T) {
	s, err := ParseSession("192.0.2.10 50000 10.0.0.1 22")
	if err != nil || *s != (Session{Client: netip.MustParseAddr("192.0.2.10"), ClientPort: 50000, ServerPort: 22, Server: netip.MustParseAddr("10.0.0.1")}) {
		t.Fatalf("%+v %v", s, err)
	}
	if s, err := ParseSession(""); s != nil || err != nil {
		t.Fatalf("empty: %v %v", s, err)
	}
	for _, bad := range []string{"1.2.3.4 5", "x 1 2 3", "1.2.3.4 0 5.6.7.8 22", "1.2.3.4 1 5.6.7.8 99999", "1.2.3.4 1 server 22"} {
		if _, err := ParseSession(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSessionThroughHere(t *testing.T) {
	if !(&Session{Server: netip.MustParseAddr("127.0.0.1")}).ThroughHere() {
		t.Error("a session to loopback, which every namespace has, is not through here")
	}
	if (&Session{Server: netip.MustParseAddr("192.0.2.77")}).ThroughHere() {
		t.Error("a session to an address no interface here has is through here")
	}
	if !(&Session{}).ThroughHere() {
		t.Error("a session with no server address (SSH_CLIENT) must be assumed to pass through here")
	}
}

func TestAdmits(t *testing.T) {
	p := simplePolicy("192.0.2.0/24")
	if !p.Admits(netip.MustParseAddr("192.0.2.9"), 22) || p.Admits(netip.MustParseAddr("192.0.3.9"), 22) || p.Admits(netip.MustParseAddr("192.0.2.9"), 23) {
		t.Error("admin CIDR")
	}
	if !p.Admits(netip.MustParseAddr("::ffff:10.1.1.1"), 8443) {
		t.Error("IPv4-mapped client over the API port")
	}
}

func TestRecordRoundTrip(t *testing.T) {
	p := testPolicyPortable()
	data, err := json.Marshal(Record{Version: 1, Policy: p, SHA256: Build(p).Hash(), RulesFile: RulesPath})
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if Build(r.Policy).Hash() != Build(p).Hash() {
		t.Fatal("policy changed in the round trip")
	}
	for _, bad := range []string{`{}`, `{"version":1}`, `{"version":2,"policy":{"apiPort":1,"sshPort":22},"sha256":"` + strings.Repeat("0", 64) + `"}`,
		`{"version":1,"policy":{"apiPort":1,"sshPort":22},"sha256":"` + strings.Repeat("0", 64) + `","extra":1}`} {
		if _, err := ParseRecord([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestDiff(t *testing.T) {
	want := Build(simplePolicy()).Table()
	if d := Diff(want, want); d != nil {
		t.Fatalf("identical: %v", d)
	}
	live := Build(simplePolicy()).Table()
	live.Chains[0].Rules = append(live.Chains[0].Rules, TableRule{Comment: "sneaky", Key: "sneaky|tcp dport 23"})
	live.Chains[2].Policy = "accept"
	d := strings.Join(Diff(live, want), "\n")
	for _, s := range []string{`- input: rule "sneaky" (not an intended rule)`, "- chain output: type filter hook output priority 0; policy accept", "+ chain output: type filter hook output priority 0; policy drop"} {
		if !strings.Contains(d, s) {
			t.Errorf("diff lacks %q:\n%s", s, d)
		}
	}
	if d := Diff(nil, want); len(d) != 1 || !strings.Contains(d[0], "missing") {
		t.Errorf("absent table: %v", d)
	}
}

func TestParseAccounts(t *testing.T) {
	as, err := parseAccounts([]byte("# c\nroot:x:0:0:root:/root:/bin/bash\n\n+nis\nq:x:999:998::/nonexistent:/usr/sbin/nologin\n"), 7)
	if err != nil || len(as) != 2 || as[1].GID != 998 {
		t.Fatalf("%+v %v", as, err)
	}
	if _, err := parseAccounts([]byte("root:x:0:0:root:/root\n"), 7); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("short line: %v", err)
	}
}
