package provision

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
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

// start launches s and returns its identity (PID, start time, boot id),
// which is recorded and checked before any later signal. The process is not
// waited for: it belongs to the host now.
func (s service) start(exe string) (proc.Identity, error) {
	logf, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return proc.Identity{}, fmt.Errorf("start %s: %w", s.Name, err)
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
		return proc.Identity{}, fmt.Errorf("start %s: %w", s.Name, err)
	}
	// Read before reaping can happen: until Wait, the PID stays ours.
	id, err := proc.Identify(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return proc.Identity{}, fmt.Errorf("start %s: record its identity: %w", s.Name, err)
	}
	// Reap it if it dies while install still runs, so alive() sees the death.
	go cmd.Wait()
	return id, nil
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool { return proc.Alive(pid) }

// stop ends the process id names, with its process group and every process
// below it (the runtime supervisor starts the inference server in a group
// of its own, and a server's workers must not outlive it): SIGTERM first,
// SIGKILL after grace. A PID now held by another process (after a crash, a
// power loss, in another PID namespace) is never signalled: it is logged
// through the returned *proc.Mismatch, which callers treat as "already gone".
func stop(id proc.Identity, grace time.Duration) error { return proc.Stop(id, grace) }

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

// logSize is the current length of a log file (0 when it does not exist).
func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
