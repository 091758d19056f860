package provision

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
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

// processes runs services as detached processes under this program's
// own supervisor (qwen-appliance run and serve).
type processes struct {
	sys *system
	l   layout
}

var _ supervisor = (*processes)(nil)

func (*processes) sandboxed() bool { return false }

func (*processes) plan(string) string { return ", detached process under this program's supervisor" }

// start launches s detached from install, journals its identity, and
// waits until ready says it serves.
func (p *processes) start(ctx context.Context, in *installer, s service, ready func() bool) (string, proc.Identity, error) {
	var started proc.Identity
	in.onUndo(func() error {
		if started.PID <= 0 {
			return nil
		}
		return p.sys.host.Stop(started, 30*time.Second)
	})
	id, err := p.sys.host.Start(in.serviceExe, s)
	if err != nil {
		return "", id, err
	}
	started = id
	if err := in.j.addProc(id); err != nil {
		return "", id, err
	}
	if err := waitFor(ctx, p.sys.host, s, id.PID, in.o.ReadyTimeout, ready); err != nil {
		return "", id, err
	}
	return "", id, nil
}

// running reports whether the very process install started still lives (a
// PID reused by another process does not count).
func (p *processes) running(svc state.Service) bool { return p.sys.host.Check(identityOf(svc)) == nil }

func (p *processes) mainPID(svc state.Service) int { return svc.PID }

func (p *processes) signal(svc state.Service, sig syscall.Signal) error {
	return signalChecked(p.sys.host, svc, identityOf(svc), sig)
}

// stop ends the recorded process, with its process group and every process
// below it (the runtime supervisor starts the inference server in a group
// of its own, and a server's workers must not outlive it): SIGTERM first,
// SIGKILL after grace. A PID now held by another process (after a crash, a
// power loss, in another PID namespace) is never signalled: it is logged
// through the returned *proc.Mismatch, which callers treat as "already gone".
func (p *processes) stop(svc state.Service, grace time.Duration) error {
	return p.sys.host.Stop(identityOf(svc), grace)
}

// removeUnit deletes a unit file that nothing loaded.
func (p *processes) removeUnit(_ context.Context, name string) error {
	return removeIfExists(p.l.path(filepath.Join(harden.UnitDir, name)))
}

func (*processes) reload(context.Context) error { return nil }

// waitFor polls ready until it returns true, the process dies, or timeout
// passes; failures carry the last lines of the service's log.
func waitFor(ctx context.Context, h host, s service, pid int, timeout time.Duration, ready func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ready() {
			return nil
		}
		if !h.Alive(pid) {
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
