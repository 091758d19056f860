//go:build linux

package verify

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// TestRuntimePortInNamespace runs services.runtime-port for real: a server
// on a runtime port in a network namespace, the firewall applied by
// harden, and connection attempts from child processes running as uid
// 65534 and as the gateway's uid.
func TestRuntimePortInNamespace(t *testing.T) {
	host, _ := netPair(t)
	const gw, rt = 4242, 4243
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(harden.RuntimePortFirst+1))
	st := &state.State{ServiceUser: "qwen-appliance", ServiceUID: gw, RuntimeUser: "qwen-runtime", RuntimeUID: rt,
		Firewall: state.Firewall{NetNS: host, Table: "inet qwen_appliance"},
		Runtime:  state.Service{Name: "runtime", Kind: "ollama", Listen: []string{addr}}}
	tg := &Target{Root: t.TempDir(), State: st}

	// Nothing listens: a refusal would prove nothing.
	expect(t, runOne(t, "services.runtime-port", tg), Fail, "nothing answers")

	var ln net.Listener
	must(t, inNetNS(host, func() (err error) { ln, err = net.Listen("tcp", addr); return err }))
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()

	// No firewall: uid 65534 connects, as in the review's attack.
	expect(t, runOne(t, "services.runtime-port", tg), Fail, "uid 65534, a user other than the gateway's, connected")

	nf, done, err := tg.netfilter()
	must(t, err)
	defer done()
	apply := func(uids ...uint32) {
		t.Helper()
		_, err := harden.Apply(context.Background(), nf, harden.Options{Root: harden.Root(tg.Root), Policy: harden.EgressPolicy{APIPort: 8443, SSHPort: 22,
			Runtime: &harden.RuntimeAccess{FirstPort: harden.RuntimePortFirst, LastPort: harden.RuntimePortLast, UIDs: uids}}})
		must(t, err)
	}
	apply(gw, rt)
	r := runOne(t, "services.runtime-port", tg)
	expect(t, r, Pass, "uid 65534 is kept off the runtime")
	expect(t, r, Pass, "refused (connection reset)")

	// A rule that shuts out the gateway as well is no fix.
	apply(rt)
	expect(t, runOne(t, "services.runtime-port", tg), Fail, "the gateway's user (uid 4242) cannot connect")
}
