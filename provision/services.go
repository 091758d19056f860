package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
)

// service is a process install starts detached from itself (its own session,
// so it outlives install), as the service user, logging to a file.
type service struct {
	Name string
	Args []string // arguments to the qwen-appliance executable
	Log  string
	UID  int
	GID  int
	// Under systemd: the unit's name and its hardening (ExecStart and Log
	// are filled in from the fields above).
	UnitName string
	Unit     harden.Service
}

// start launches s and returns its PID. The process is not waited for: it
// belongs to the host now, and its PID goes into the state record.
func (s service) start(exe string) (int, error) {
	logf, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", s.Name, err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, s.Args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent", "LANG=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if s.UID > 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.UID), Gid: uint32(s.GID), NoSetGroups: true}
	}
	// The child inherits the umask: whatever the server writes (Ollama's
	// blobs, logs, keys) is private to the service user.
	old := syscall.Umask(0o077)
	err = cmd.Start()
	syscall.Umask(old)
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", s.Name, err)
	}
	pid := cmd.Process.Pid
	// Reap it if it dies while install still runs, so alive() sees the death.
	go cmd.Wait()
	return pid, nil
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state is the field after the ")" that closes the command name.
	i := bytes.LastIndexByte(data, ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z' && data[i+2] != 'X'
}

// stop ends the process group led by pid, and every process below it: the
// runtime supervisor starts the inference server in a group of its own,
// and a server's workers (Ollama's runners) must not outlive it. SIGTERM
// first, so each stops gracefully; SIGKILL for whatever is left after grace.
func stop(pid int, grace time.Duration) error {
	if !alive(pid) {
		return nil
	}
	// Taken before signalling: once a parent dies its children are
	// re-parented and can no longer be found from it.
	tree := append(Descendants(pid), pid)
	if err := syscall.Kill(-pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && anyAlive(tree) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range tree {
		if alive(p) {
			syscall.Kill(-p, syscall.SIGKILL)
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	for range 100 {
		if !anyAlive(tree) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("stop pid %d: still running after SIGKILL", pid)
}

func anyAlive(pids []int) bool {
	for _, p := range pids {
		if alive(p) {
			return true
		}
	}
	return false
}

// Descendants lists the processes below pid (children, grandchildren …),
// read from /proc.
func Descendants(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The parent PID is the second field after the ")" closing the name.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := children[pid]
	for len(queue) > 0 {
		p := queue[0]
		queue = append(queue[1:], children[p]...)
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// waitFor polls ready until it returns true, the process dies, or timeout
// passes; failures carry the last lines of the service's log.
func waitFor(ctx context.Context, s service, pid int, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if !alive(pid) {
			return fmt.Errorf("%s exited before it was ready; last log lines:\n%s", s.Name, tail(s.Log, 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; last log lines:\n%s", s.Name, timeout, tail(s.Log, 15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// logSays reports whether the log file, from byte offset from on (logs are
// appended to across restarts), has a line that starts with prefix and
// contains each of parts.
func logSays(path string, from int64, prefix string, parts ...string) func() bool {
	return func() bool {
		data, err := os.ReadFile(path)
		if err != nil || int64(len(data)) < from {
			return false
		}
		data = data[from:]
	lines:
		for _, l := range strings.Split(string(data), "\n") {
			if !strings.HasPrefix(l, prefix) {
				continue
			}
			for _, p := range parts {
				if !strings.Contains(l, p) {
					continue lines
				}
			}
			return true
		}
		return false
	}
}

// httpOK reports whether GET url answers 200.
func httpOK(url string) func() bool {
	c := &http.Client{Timeout: 2 * time.Second}
	return func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// freePort asks the kernel for an unused loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logSize is the current length of a log file (0 when it does not exist).
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
