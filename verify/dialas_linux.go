//go:build linux

package verify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// dialEnv turns any program that links this package into a one-shot TCP
// client: started with QWA_VERIFY_DIAL=ADDR in its environment, it connects
// to ADDR, prints what happened and exits before main runs. verify starts
// itself that way (/proc/self/exe) as another user, because the firewall's
// runtime-port rule checks the socket's owner, and only a process running
// as a user opens sockets it owns.
const dialEnv = "QWA_VERIFY_DIAL"

// Exit statuses of the dial child.
const (
	dialConnected = 0
	dialRefused   = 3 // a reset: the rule's reject, or nothing listening
	dialBlocked   = 4 // dropped: a timeout or EPERM
	dialOther     = 5
)

func init() {
	if addr := os.Getenv(dialEnv); addr != "" {
		os.Exit(dialOnce(addr))
	}
}

func dialOnce(addr string) int {
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	switch {
	case err == nil:
		c.Close()
		fmt.Println("connected")
		return dialConnected
	case errors.Is(err, syscall.ECONNREFUSED):
		fmt.Println("refused (connection reset)")
		return dialRefused
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || os.IsTimeout(err):
		fmt.Println("dropped:", err)
		return dialBlocked
	default:
		fmt.Println(err)
		return dialOther
	}
}

// dialAs connects to addr as uid (and gid) from a child process inside the
// named network namespace (the current one when empty). It returns the
// child's exit status and what it printed.
func dialAs(netns string, uid, gid int, addr string) (int, string, error) {
	var out []byte
	var code int
	err := inNetNS(netns, func() error {
		// The child is forked from this thread, so it starts in its
		// network namespace.
		ctx, cancel := context.WithTimeout(context.Background(), 3*probeTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "/proc/self/exe")
		cmd.Env = []string{dialEnv + "=" + addr}
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
		var err error
		out, err = cmd.Output()
		var ee *exec.ExitError
		switch {
		case err == nil:
			code = 0
		case errors.As(err, &ee) && ee.Exited():
			code = ee.ExitCode()
		default:
			return fmt.Errorf("run a connection probe as uid %d: %w", uid, err)
		}
		return nil
	})
	return code, strings.TrimSpace(string(out)), err
}
