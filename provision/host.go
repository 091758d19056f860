package provision

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
)

// system is what install changes on the host besides files: the systemd
// manager, processes, and who owns a file. Install, rollback, status and
// uninstall reach the host only through it, so their decisions (what to
// stop, what to undo, what a crashed attempt left) are tested with the
// fakes in fake_test.go, unprivileged.
type system struct {
	systemd systemd
	host    host
}

// realSystem is the host itself.
func realSystem() *system { return &system{systemd: systemctl{}, host: osHost{}} }

// orReal is sys, or the host itself when nil (options left unset).
func orReal(sys *system) *system {
	if sys == nil {
		return realSystem()
	}
	return sys
}

// systemd is the service manager: units are written as files by install,
// and loaded, enabled, started, stopped and watched through it.
type systemd interface {
	// Systemctl runs systemctl with args; the error carries its output.
	Systemctl(ctx context.Context, args ...string) error
	// MainPID is the unit's main process, 0 when it is not running.
	MainPID(ctx context.Context, unit string) (int, error)
	// Active reports whether the unit is active (running).
	Active(ctx context.Context, unit string) bool
	// Journal is the last n lines systemd logged about the unit
	// (why it failed to start), indented, for an error message.
	Journal(unit string, n int) string
}

// host is process control and file ownership: starting a detached
// process, reading a process's identity from /proc, signalling only a
// process whose identity matches, and chown.
type host interface {
	// Start runs s detached from install (its own session, as s's user,
	// umask 077, output appended to s.Log) and returns its identity.
	Start(exe string, s service) (proc.Identity, error)
	// Identify reads the identity of the live process pid.
	Identify(pid int) (proc.Identity, error)
	// Check is proc.Identity.Check: nil while id is still the live process
	// it names, an error matching proc.ErrGone once it exited, a
	// *proc.Mismatch when another process holds the PID.
	Check(id proc.Identity) error
	// Alive reports whether pid is a running (not zombie) process.
	Alive(pid int) bool
	// Signal sends sig to id's process after checking its identity.
	Signal(id proc.Identity, sig syscall.Signal) error
	// Stop ends id's process tree (proc.Stop): SIGTERM, SIGKILL after
	// grace; a *proc.Mismatch when the PID is another process's now.
	Stop(id proc.Identity, grace time.Duration) error
	// Chown changes the owner of path (following a symlink, as os.Chown).
	Chown(path string, uid, gid int) error
	// Lchown changes the owner of path itself, never a symlink's target.
	Lchown(path string, uid, gid int) error
}

// systemctl is the host's systemd.
type systemctl struct{}

var _ systemd = systemctl{}

func (systemctl) Systemctl(ctx context.Context, args ...string) error {
	return harden.Systemctl(ctx, args...)
}

func (systemctl) MainPID(ctx context.Context, unit string) (int, error) {
	return harden.MainPID(ctx, unit)
}

func (systemctl) Active(ctx context.Context, unit string) bool { return harden.UnitActive(ctx, unit) }

func (systemctl) Journal(unit string, n int) string {
	out, err := exec.Command("journalctl", "--no-pager", "-o", "cat", "-n", strconv.Itoa(n), "-u", unit).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("  (journalctl: %v)", err)
	}
	return "  " + strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n  ")
}

// osHost is the kernel: /proc, signals and chown.
type osHost struct{}

var _ host = osHost{}

func (osHost) Identify(pid int) (proc.Identity, error) { return proc.Identify(pid) }
func (osHost) Check(id proc.Identity) error            { return id.Check() }
func (osHost) Alive(pid int) bool                      { return proc.Alive(pid) }
func (osHost) Chown(path string, uid, gid int) error   { return os.Chown(path, uid, gid) }
func (osHost) Lchown(path string, uid, gid int) error  { return os.Lchown(path, uid, gid) }

func (osHost) Signal(id proc.Identity, sig syscall.Signal) error { return id.Signal(sig) }

func (osHost) Stop(id proc.Identity, grace time.Duration) error { return proc.Stop(id, grace) }

// Start launches s and returns its identity (PID, start time, boot id),
// which is recorded and checked before any later signal. The process is not
// waited for: it belongs to the host now.
func (osHost) Start(exe string, s service) (proc.Identity, error) {
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
	// Reap it if it dies while install still runs, so Alive sees the death.
	go cmd.Wait()
	return id, nil
}
