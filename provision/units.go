package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// chooseSupervisor resolves Options.Supervisor: an upgrade keeps what the
// installation uses; a first install uses systemd where it is PID 1 and the
// root is the real system.
func chooseSupervisor(want string, root harden.Root, prev *state.State) (string, error) {
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

// supervisor keeps the runtime and the gateway running, and answers for the
// services an installation recorded: units (systemd) or processes.
type supervisor interface {
	// sandboxed reports whether services run in harden's unit sandbox:
	// it hides /tmp and /home from them, and the gateway's unit holds the
	// networks allowed in (IPAddressAllow).
	sandboxed() bool
	// plan says how a service named unit would run, for --dry-run.
	plan(unit string) string
	// start starts s, journaled and with its undo registered before it
	// exists, and waits until ready says it serves. It returns the unit
	// file (systemd only) and the main process's identity.
	start(ctx context.Context, in *installer, s service, ready func() bool) (unit string, id proc.Identity, err error)
	// running reports whether a recorded service is up.
	running(svc state.Service) bool
	// mainPID is a recorded service's main process now, 0 when none.
	mainPID(svc state.Service) int
	// signal sends sig to a recorded service's main process, only while
	// its identity still matches.
	signal(svc state.Service, sig syscall.Signal) error
	// stop stops a recorded service for good: a unit is stopped, disabled
	// and removed; a process tree ended. A recorded PID that another
	// process holds now is left alone and reported as a *proc.Mismatch.
	stop(svc state.Service, grace time.Duration) error
	// removeUnit removes a unit file in the unit directory (a scheduled
	// job's): under systemd stopped and disabled first.
	removeUnit(ctx context.Context, name string) error
	// reload makes the supervisor read the unit directory again.
	reload(ctx context.Context) error
}

// supervisors are both supervisors of an installation: the one install
// starts services with is chosen once (pick); a recorded service is the
// one's that started it (of).
type supervisors struct {
	units *units
	procs *processes
}

func newSupervisors(sys *system, l layout) supervisors {
	return supervisors{units: &units{sys: sys, l: l}, procs: &processes{sys: sys, l: l}}
}

// pick is the supervisor named kind (SupervisorSystemd or SupervisorProcess).
func (s supervisors) pick(kind string) supervisor {
	if kind == SupervisorSystemd {
		return s.units
	}
	return s.procs
}

// of is the supervisor that runs a recorded service: systemd when install
// recorded a unit for it.
func (s supervisors) of(svc state.Service) supervisor {
	if svc.Unit != "" {
		return s.units
	}
	return s.procs
}

// units runs services as hardened systemd units.
type units struct {
	sys *system
	l   layout
}

var _ supervisor = (*units)(nil)

func (*units) sandboxed() bool { return true }

func (u *units) plan(unit string) string {
	return ", hardened systemd unit " + u.l.path(filepath.Join(harden.UnitDir, unit)) + " (enabled)"
}

// start writes s as a hardened unit, enables and starts it, and waits
// until ready says it serves. It returns the unit file and the main PID.
func (u *units) start(ctx context.Context, in *installer, s service, ready func() bool) (string, proc.Identity, error) {
	execLine, err := harden.ExecLine(append([]string{in.serviceExe}, s.Args...)...)
	if err != nil {
		return "", proc.Identity{}, err
	}
	spec := s.Unit
	spec.ExecStart, spec.Log = execLine, s.Log
	spec.StopStatus = 130 // qwen-appliance's exit status after a stop signal
	text, err := harden.Unit(spec)
	if err != nil {
		return "", proc.Identity{}, err
	}
	// systemd opens the log as root; create it first so it is the service
	// user's and private, as under the project's supervisor.
	f, err := os.OpenFile(s.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return "", proc.Identity{}, err
	}
	f.Close()
	if err := u.sys.host.Chown(s.Log, s.UID, s.GID); err != nil {
		return "", proc.Identity{}, err
	}
	path := u.l.path(filepath.Join(harden.UnitDir, s.UnitName))
	// Journaled and registered before the unit exists: a crash or a
	// failure from here on removes it.
	if err := in.j.addUnit(s.UnitName); err != nil {
		return "", proc.Identity{}, err
	}
	in.onUndo(func() error { return u.removeUnit(context.Background(), s.UnitName) })
	if err := atomicfile.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", proc.Identity{}, fmt.Errorf("unit %s: %w", s.UnitName, err)
	}
	sd := u.sys.systemd
	if err := sd.Systemctl(ctx, "daemon-reload"); err != nil {
		return "", proc.Identity{}, err
	}
	// restart, not start: re-installing a release whose unit is still up
	// must run the unit as just written.
	if err := sd.Systemctl(ctx, "enable", s.UnitName); err != nil {
		return "", proc.Identity{}, err
	}
	if err := sd.Systemctl(ctx, "restart", s.UnitName); err != nil {
		return "", proc.Identity{}, fmt.Errorf("%w; systemd's last lines about it:\n%s", err, sd.Journal(s.UnitName, 10))
	}
	pid, err := sd.MainPID(ctx, s.UnitName)
	if err != nil {
		return "", proc.Identity{}, err
	}
	if err := waitFor(ctx, u.sys.host, s, pid, in.o.ReadyTimeout, ready); err != nil {
		return "", proc.Identity{}, err
	}
	id, err := u.sys.host.Identify(pid)
	return path, id, err
}

// removeUnit stops and disables a unit install made and deletes its file.
func (u *units) removeUnit(ctx context.Context, name string) error {
	sd := u.sys.systemd
	var errs []error
	if sd.Active(ctx, name) {
		errs = append(errs, sd.Systemctl(ctx, "stop", name))
	}
	path := u.l.path(filepath.Join(harden.UnitDir, name))
	if _, err := os.Stat(path); err == nil {
		errs = append(errs, sd.Systemctl(ctx, "disable", name), os.Remove(path), sd.Systemctl(ctx, "daemon-reload"))
	}
	// A unit that failed before (a crash, a refused start) stays listed
	// as failed until told otherwise.
	sd.Systemctl(ctx, "reset-failed", name)
	return errors.Join(errs...)
}

func (u *units) reload(ctx context.Context) error {
	return u.sys.systemd.Systemctl(ctx, "daemon-reload")
}

// running reports whether the recorded service's unit is active.
func (u *units) running(svc state.Service) bool {
	return u.sys.systemd.Active(context.Background(), filepath.Base(svc.Unit))
}

// mainPID is what systemd names now: it may have restarted a unit since
// install recorded its PID.
func (u *units) mainPID(svc state.Service) int {
	if pid, err := u.sys.systemd.MainPID(context.Background(), filepath.Base(svc.Unit)); err == nil {
		return pid
	}
	return 0
}

func (u *units) signal(svc state.Service, sig syscall.Signal) error {
	pid := u.mainPID(svc)
	if pid <= 0 {
		return fmt.Errorf("signal %s: not running", svc.Name)
	}
	id, err := u.sys.host.Identify(pid)
	if err != nil {
		return fmt.Errorf("signal %s: not running: %w", svc.Name, err)
	}
	return signalChecked(u.sys.host, svc, id, sig)
}

func (u *units) stop(svc state.Service, grace time.Duration) error {
	return u.removeUnit(context.Background(), filepath.Base(svc.Unit))
}

// signalChecked signals id after proving it is still the process it names.
func signalChecked(h host, svc state.Service, id proc.Identity, sig syscall.Signal) error {
	if err := h.Check(id); err != nil {
		return fmt.Errorf("signal %s: %w", svc.Name, err)
	}
	if err := h.Signal(id, sig); err != nil {
		return fmt.Errorf("signal %s: %w", svc.Name, err)
	}
	return nil
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

// identityOf is the recorded identity of a service's process.
func identityOf(svc state.Service) proc.Identity {
	return proc.Identity{PID: svc.PID, Start: svc.Start, Boot: svc.Boot}
}
