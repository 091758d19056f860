package harden

import (
	"testing"
)

func FuzzParseEgress(f *testing.F) {
	for _, s := range []string{"udp:10.0.0.5/32:123", "tcp:fd00::/64:514", "tcp:[fd00::1]:22", "icmp:1.2.3.4:1", "::", "udp:0.0.0.0/0:67"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseEgress(s)
		if err != nil {
			return
		}
		// What parses renders valid rules and reads back the same.
		again, err := ParseEgress(r.String())
		if err != nil || again != r {
			t.Fatalf("%q -> %s -> %v %v", s, r, again, err)
		}
		p := EgressPolicy{APIPort: 1, SSHPort: 22, Egress: []EgressRule{r}}
		if err := p.Validate(); err != nil {
			t.Fatalf("%q parsed but does not validate: %v", s, err)
		}
		_ = Build(p).Text()
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"version":1,"policy":{"apiPort":8443,"sshPort":22,"clientCIDRs":["10.0.0.0/8"],"egress":[{"proto":"udp","prefix":"10.0.0.5/32","port":123}]},"sha256":"0000000000000000000000000000000000000000000000000000000000000000","rulesFile":"/etc/x"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRecord(data)
		if err != nil {
			return
		}
		_ = Build(r.Policy).Text()
	})
}

func FuzzParseAccounts(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\nq:x:999:999::/nonexistent:/usr/sbin/nologin\n"), 7)
	f.Add([]byte("root:x:0:\n"), 4)
	f.Fuzz(func(t *testing.T, data []byte, fields int) {
		if fields != 4 && fields != 7 {
			return
		}
		as, err := parseAccounts(data, fields)
		if err != nil {
			return
		}
		for _, a := range as {
			if a.Name == "" || a.ID < 0 {
				t.Fatalf("bad account %+v", a)
			}
		}
	})
}

func FuzzParseSession(f *testing.F) {
	f.Add("192.0.2.10 50000 10.0.0.1 22")
	f.Add("fe80::1%eth0 1 fe80::2 22")
	f.Fuzz(func(t *testing.T, s string) {
		sess, err := ParseSession(s)
		if err == nil && sess != nil && (sess.ServerPort == 0 || !sess.Client.IsValid()) {
			t.Fatalf("%q -> %+v", s, sess)
		}
	})
}
