//go:build linux

package harden

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// requireNetns skips unless the test can create network namespaces and
// drive nftables in them.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

var nsCount atomic.Int32

// netns is a throwaway network namespace created by `ip netns add` and
// deleted in t.Cleanup, whatever the test's outcome.
type netns struct {
	name string
	fd   int
}

func newNetns(t *testing.T, role string) *netns {
	t.Helper()
	name := fmt.Sprintf("qa-%s-%d-%d", role, os.Getpid(), nsCount.Add(1))
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("delete netns %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ns := &netns{name: name, fd: int(f.Fd())}
	ns.ip(t, "link", "set", "lo", "up")
	return ns
}

func (ns *netns) ip(t *testing.T, args ...string) {
	t.Helper()
	run(t, "ip", append([]string{"-n", ns.name}, args...)...)
}

// exec runs a command inside the namespace and returns its combined output.
func (ns *netns) exec(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	return string(out), err
}

func (ns *netns) kernel(t *testing.T) *Kernel {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(ns.fd))
	if err != nil {
		t.Fatal(err)
	}
	return NewKernel(c)
}

// do runs fn on a thread switched into the namespace; sockets fn creates
// stay in that namespace after the thread switches back.
func (ns *netns) do(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			t.Error(err)
			runtime.UnlockOSThread()
			return
		}
		defer self.Close()
		if err := unix.Setns(ns.fd, unix.CLONE_NEWNET); err != nil {
			t.Error(err)
			runtime.UnlockOSThread()
			return
		}
		defer func() {
			// A thread that cannot return to its namespace is left locked,
			// so the runtime discards it instead of reusing it.
			if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err == nil {
				runtime.UnlockOSThread()
			}
		}()
		fn()
	}()
	<-done
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// topology is a "host" and an "internet" namespace joined by a veth pair,
// with IPv4 and IPv6 on both ends; the internet side has a second address
// of each family that no policy allows.
type topology struct {
	host, inet *netns
}

const (
	hostV4    = "10.200.1.1"
	inetV4    = "10.200.1.2"
	inetV4Bad = "10.200.1.3"
	hostV6    = "fd00:200:1::1"
	inetV6    = "fd00:200:1::2"
	inetV6Bad = "fd00:200:1::3"
)

func newTopology(t *testing.T) topology {
	t.Helper()
	requireNetns(t)
	tp := topology{host: newNetns(t, "host"), inet: newNetns(t, "inet")}
	tp.host.ip(t, "link", "add", "vh", "type", "veth", "peer", "name", "vi", "netns", tp.inet.name)
	tp.host.ip(t, "addr", "add", hostV4+"/24", "dev", "vh")
	tp.host.ip(t, "addr", "add", hostV6+"/64", "dev", "vh", "nodad")
	tp.host.ip(t, "link", "set", "vh", "up")
	for _, a := range []string{inetV4 + "/24", inetV4Bad + "/24"} {
		tp.inet.ip(t, "addr", "add", a, "dev", "vi")
	}
	for _, a := range []string{inetV6 + "/64", inetV6Bad + "/64"} {
		tp.inet.ip(t, "addr", "add", a, "dev", "vi", "nodad")
	}
	tp.inet.ip(t, "link", "set", "vi", "up")
	return tp
}

func nftStdin(ns *netns, text string) (string, error) {
	cmd := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
