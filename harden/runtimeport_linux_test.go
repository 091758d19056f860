//go:build linux

package harden

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// dialEnv makes the test binary a one-shot TCP client (TestDialHelper):
// the only way to open a socket as another uid is a process running as it.
const dialEnv = "QWA_HARDEN_TEST_DIAL"

// TestDialHelper is not a test: run as a child with dialEnv set, it dials
// that address and exits 0 when connected, 3 when refused, 4 otherwise.
func TestDialHelper(t *testing.T) {
	addr := os.Getenv(dialEnv)
	if addr == "" {
		t.Skip("helper process only")
	}
	c, err := net.DialTimeout("tcp", addr, dropWait)
	switch {
	case err == nil:
		c.Close()
		os.Exit(0)
	case errors.Is(err, syscall.ECONNREFUSED):
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
}

// dialAs connects to addr from inside ns as uid (and the same gid), in a
// child process, and reports how it went.
func dialAs(t *testing.T, ns *netns, uid int, addr string) string {
	t.Helper()
	var out []byte
	var err error
	// The child inherits the network namespace of the thread that forks it.
	ns.do(t, func() {
		cmd := exec.Command("/proc/self/exe", "-test.run=^TestDialHelper$")
		cmd.Env = append(os.Environ(), dialEnv+"="+addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), NoSetGroups: true}}
		out, err = cmd.CombinedOutput()
	})
	var ee *exec.ExitError
	switch {
	case err == nil:
		return "connected"
	case errors.As(err, &ee) && ee.ExitCode() == 3:
		return "refused"
	case errors.As(err, &ee) && ee.ExitCode() == 4:
		return "failed: " + strings.TrimSpace(string(out))
	}
	t.Fatalf("dial helper as uid %d: %v: %s", uid, err, out)
	return ""
}

// TestRuntimePortOwner applies the policy with the runtime-port rule in a
// network namespace and proves it with real connections: a server on a
// runtime port accepts the gateway's uid, the runtime's own and root, and
// refuses any other uid at once, while that uid still reaches other
// loopback ports and the gateway's uid still connects after a refusal.
func TestRuntimePortOwner(t *testing.T) {
	requireNetns(t)
	const gw, rt, other = 4242, 4243, 65534
	ns := newNetns(t, "rtport")
	runtimeAddr := hostPort("127.0.0.1", RuntimePortFirst+3)
	serveTCP(t, ns, runtimeAddr)
	serveTCP(t, ns, "127.0.0.1:7000")

	// Before: any local user reaches the runtime; this is the hole.
	if got := dialAs(t, ns, other, runtimeAddr); got != "connected" {
		t.Fatalf("before the rule: uid %d %s; want connected (is the helper working?)", other, got)
	}

	pol := EgressPolicy{APIPort: 8443, SSHPort: 22,
		Runtime: &RuntimeAccess{FirstPort: RuntimePortFirst, LastPort: RuntimePortLast, UIDs: []uint32{gw, rt}}}
	if _, err := Apply(context.Background(), ns.kernel(t), Options{Policy: pol, Root: Root(t.TempDir())}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		uid  int
		addr string
		want string
	}{
		{gw, runtimeAddr, "connected"},
		{rt, runtimeAddr, "connected"},
		{0, runtimeAddr, "connected"},
		{other, runtimeAddr, "refused"},
		{1000, runtimeAddr, "refused"},
		{other, "127.0.0.1:7000", "connected"}, // only the runtime's ports are guarded
		{gw, runtimeAddr, "connected"},
	} {
		if got := dialAs(t, ns, c.uid, c.addr); got != c.want {
			t.Errorf("uid %d to %s: %s, want %s", c.uid, c.addr, got, c.want)
		}
	}
	// The in-process client (root) exchanges data both ways as well.
	mustWork(t, "root to the runtime port", tcpExchange(t, ns, "", runtimeAddr))
	// Every port of the range is guarded, not only the one in use.
	serveTCP(t, ns, hostPort("127.0.0.1", RuntimePortLast))
	if got := dialAs(t, ns, other, hostPort("127.0.0.1", RuntimePortLast)); got != "refused" {
		t.Errorf("uid %d to the last runtime port: %s, want refused", other, got)
	}
}
