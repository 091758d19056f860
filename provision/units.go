package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// Supervisors: who keeps the runtime and the gateway running.
const (
	// SupervisorSystemd runs them as hardened systemd units (package
	// harden's sandboxing), enabled so they come back at boot.
	SupervisorSystemd = "systemd"
	// SupervisorProcess runs them as detached processes under the
	// project's own supervisor (containers, CI, sandboxes under --root).
	SupervisorProcess = "process"
)

// supervisor resolves Options.Supervisor: an upgrade keeps what the
// installation uses; a first install uses systemd where it is PID 1 and the
// root is the real system.
func supervisor(want string, root harden.Root, prev *state.State) (string, error) {
	switch want {
	case SupervisorProcess:
		return want, nil
	case SupervisorSystemd:
		if root != "" {
			return "", fmt.Errorf("install: systemd units need --root / (the units would start programs outside %s)", root)
		}
		if !harden.SystemdBooted() {
			return "", errors.New("install: systemd is not running on this host (no /run/systemd/system); use --supervisor process")
		}
		return want, nil
	case "":
		if prev != nil {
			if prev.Gateway.Unit != "" {
				return SupervisorSystemd, nil
			}
			return SupervisorProcess, nil
		}
		if root == "" && harden.SystemdBooted() {
			return SupervisorSystemd, nil
		}
		return SupervisorProcess, nil
	default:
		return "", fmt.Errorf("install: supervisor %q: want systemd or process", want)
	}
}

// startUnit writes s as a hardened unit, enables and starts it, and waits
// until ready says it serves. It returns the unit file and the main PID.
func (in *installer) startUnit(ctx context.Context, s service, ready func() bool) (string, int, error) {
	execLine, err := harden.ExecLine(append([]string{in.serviceExe}, s.Args...)...)
	if err != nil {
		return "", 0, err
	}
	spec := s.Unit
	spec.ExecStart, spec.Log = execLine, s.Log
	spec.StopStatus = 130 // qwen-appliance's exit status after a stop signal
	text, err := harden.Unit(spec)
	if err != nil {
		return "", 0, err
	}
	// systemd opens the log as root; create it first so it is the service
	// user's and private, as under the project's supervisor.
	f, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return "", 0, err
	}
	f.Close()
	if err := os.Chown(s.Log, s.UID, s.GID); err != nil {
		return "", 0, err
	}
	path := in.l.path(filepath.Join(harden.UnitDir, s.UnitName))
	// Journaled and registered before the unit exists: a crash or a
	// failure from here on removes it.
	if err := in.j.addUnit(s.UnitName); err != nil {
		return "", 0, err
	}
	in.onUndo(func() error { return removeUnit(context.Background(), in.l, s.UnitName) })
	if err := atomicfile.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", 0, fmt.Errorf("unit %s: %w", s.UnitName, err)
	}
	if err := harden.Systemctl(ctx, "daemon-reload"); err != nil {
		return "", 0, err
	}
	// restart, not start: re-installing a release whose unit is still up
	// must run the unit as just written.
	if err := harden.Systemctl(ctx, "enable", s.UnitName); err != nil {
		return "", 0, err
	}
	if err := harden.Systemctl(ctx, "restart", s.UnitName); err != nil {
		return "", 0, fmt.Errorf("%w; systemd's last lines about it:\n%s", err, unitJournal(s.UnitName, 10))
	}
	pid, err := harden.MainPID(ctx, s.UnitName)
	if err != nil {
		return "", 0, err
	}
	if err := waitFor(ctx, s, pid, in.o.ReadyTimeout, ready); err != nil {
		return "", 0, err
	}
	return path, pid, nil
}

// unitJournal is what systemd logged about a unit (why it failed to start:
// a sandboxing step, a missing path), indented.
func unitJournal(name string, n int) string {
	out, err := exec.Command("journalctl", "--no-pager", "-o", "cat", "-n", strconv.Itoa(n), "-u", name).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("  (journalctl: %v)", err)
	}
	return "  " + strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n  ")
}

// hiddenFromUnits are the directories a hardened unit cannot see
// (PrivateTmp, ProtectHome): a store or root there would vanish for the
// services.
var hiddenFromUnits = []string{"/tmp", "/var/tmp", "/home", "/root", "/run/user"}

// visibleToUnits refuses paths the units' sandbox hides.
func visibleToUnits(paths ...string) error {
	for _, p := range paths {
		for _, h := range hiddenFromUnits {
			if p == h || strings.HasPrefix(p, h+"/") {
				return fmt.Errorf("install: %s is under %s, which the hardened units cannot see (PrivateTmp, ProtectHome); put it elsewhere (e.g. --store /var/lib/qwen-appliance/store) or use --supervisor process", p, h)
			}
		}
	}
	return nil
}

// removeUnit stops and disables a unit install made and deletes its file.
func removeUnit(ctx context.Context, l layout, name string) error {
	var errs []error
	if harden.UnitActive(ctx, name) {
		errs = append(errs, harden.Systemctl(ctx, "stop", name))
	}
	path := l.path(filepath.Join(harden.UnitDir, name))
	if _, err := os.Stat(path); err == nil {
		errs = append(errs, harden.Systemctl(ctx, "disable", name), os.Remove(path), harden.Systemctl(ctx, "daemon-reload"))
	}
	// A unit that failed before (a crash, a refused start) stays listed
	// as failed until told otherwise.
	harden.Systemctl(ctx, "reset-failed", name)
	return errors.Join(errs...)
}

// running reports whether a recorded service is up: its unit is active, or
// the very process install started still lives (a PID reused by another
// process does not count).
func running(svc state.Service) bool {
	if svc.Unit != "" {
		return harden.UnitActive(context.Background(), filepath.Base(svc.Unit))
	}
	return identityOf(svc).Ours()
}

// identityOf is the recorded identity of a service's process.
func identityOf(svc state.Service) proc.Identity {
	return proc.Identity{PID: svc.PID, Start: svc.Start, Boot: svc.Boot}
}

// mainPID is a recorded service's process now: systemd may have restarted
// a unit since install recorded its PID.
func mainPID(svc state.Service) int {
	if svc.Unit != "" {
		if pid, err := harden.MainPID(context.Background(), filepath.Base(svc.Unit)); err == nil {
			return pid
		}
		return 0
	}
	return svc.PID
}

// signal sends sig to a recorded service's main process: the one systemd
// names for a unit, else the recorded process, only while its identity
// still matches.
func signal(svc state.Service, sig syscall.Signal) error {
	id := identityOf(svc)
	if svc.Unit != "" {
		pid := mainPID(svc)
		if pid <= 0 {
			return fmt.Errorf("signal %s: not running", svc.Name)
		}
		var err error
		if id, err = proc.Identify(pid); err != nil {
			return fmt.Errorf("signal %s: not running: %w", svc.Name, err)
		}
	}
	if err := id.Check(); err != nil {
		return fmt.Errorf("signal %s: %w", svc.Name, err)
	}
	if err := id.Signal(sig); err != nil {
		return fmt.Errorf("signal %s: %w", svc.Name, err)
	}
	return nil
}

// stopService stops a recorded service: its unit is stopped, disabled and
// removed, or its process tree ended. A recorded PID that another process
// holds now is left alone and reported as a *proc.Mismatch.
func stopService(l layout, svc state.Service, grace time.Duration) error {
	if svc.Unit != "" {
		return removeUnit(context.Background(), l, filepath.Base(svc.Unit))
	}
	return stop(identityOf(svc), grace)
}
