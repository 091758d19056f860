package provision

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
)

// fakeBoot is the boot id of the fake host's processes.
const fakeBoot = "fake-boot"

// fakeProc is one process on the fake host.
type fakeProc struct {
	id      proc.Identity
	svc     service // what started it (the zero service for strangers)
	alive   bool
	signals []syscall.Signal
}

// fakeHost is a process table and a chown log in memory. Processes started
// through it never run; hooks stand in for what the real ones would do
// (write a ready line to their log, answer SIGHUP). reuse simulates a PID
// handed to another process after a crash or a power loss.
type fakeHost struct {
	mu     sync.Mutex
	next   int
	tick   uint64
	procs  map[int]*fakeProc
	owners map[string][2]int // path → uid, gid as last given by Chown
	stops  []int             // PIDs Stop ended, in order

	failStart error                               // the next Start fails with it
	onStart   func(s service, id proc.Identity)   // after a process starts
	onSignal  func(p *fakeProc, s syscall.Signal) // after a signal is delivered
}

var _ host = (*fakeHost)(nil)

func newFakeHost() *fakeHost {
	return &fakeHost{next: 4000, tick: 1000, procs: map[int]*fakeProc{}, owners: map[string][2]int{}}
}

// spawn adds a live process and returns its identity.
func (h *fakeHost) spawn(s service) proc.Identity {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	h.tick += 7
	id := proc.Identity{PID: h.next, Start: h.tick, Boot: fakeBoot}
	h.procs[id.PID] = &fakeProc{id: id, svc: s, alive: true}
	return id
}

// reuse ends pid's process and gives the PID to a stranger, which must never
// be signalled on the old record's word.
func (h *fakeHost) reuse(pid int) proc.Identity {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tick += 7
	id := proc.Identity{PID: pid, Start: h.tick, Boot: fakeBoot}
	h.procs[pid] = &fakeProc{id: id, alive: true}
	return id
}

// kill ends pid's process as a crash would.
func (h *fakeHost) kill(pid int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.procs[pid]; p != nil {
		p.alive = false
	}
}

// live lists the live processes started for a service (strangers left out),
// by service name.
func (h *fakeHost) live() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, p := range h.procs {
		if p.alive && p.svc.Name != "" {
			out = append(out, fmt.Sprintf("%s(%d)", p.svc.Name, p.id.PID))
		}
	}
	slices.Sort(out)
	return out
}

func (h *fakeHost) proc(pid int) *fakeProc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.procs[pid]
}

func (h *fakeHost) Start(exe string, s service) (proc.Identity, error) {
	if err := h.failStart; err != nil {
		h.failStart = nil
		return proc.Identity{}, err
	}
	id := h.spawn(s)
	if h.onStart != nil {
		h.onStart(s, id)
	}
	return id, nil
}

func (h *fakeHost) Identify(pid int) (proc.Identity, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.procs[pid]
	if p == nil || !p.alive {
		return proc.Identity{}, fmt.Errorf("fake: pid %d: %w", pid, proc.ErrGone)
	}
	return p.id, nil
}

// Check follows proc.Identity.Check: gone, a mismatch, or ours.
func (h *fakeHost) Check(id proc.Identity) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.procs[id.PID]
	switch {
	case p == nil || !p.alive:
		return fmt.Errorf("pid %d: %w", id.PID, proc.ErrGone)
	case id.Start == 0 || id.Boot == "":
		return &proc.Mismatch{ID: id, Reason: "no start time or boot id was recorded"}
	case id.Boot != p.id.Boot:
		return &proc.Mismatch{ID: id, Reason: "recorded in an earlier boot"}
	case id.Start != p.id.Start:
		return &proc.Mismatch{ID: id, Reason: "another start time"}
	}
	return nil
}

func (h *fakeHost) Alive(pid int) bool {
	p := h.proc(pid)
	return p != nil && p.alive
}

func (h *fakeHost) Signal(id proc.Identity, sig syscall.Signal) error {
	if err := h.Check(id); err != nil {
		if errors.Is(err, proc.ErrGone) {
			return nil
		}
		return err
	}
	p := h.proc(id.PID)
	h.mu.Lock()
	p.signals = append(p.signals, sig)
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.alive = false
	}
	h.mu.Unlock()
	if h.onSignal != nil {
		h.onSignal(p, sig)
	}
	return nil
}

func (h *fakeHost) Stop(id proc.Identity, grace time.Duration) error {
	if err := h.Check(id); err != nil {
		if errors.Is(err, proc.ErrGone) {
			return nil
		}
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.procs[id.PID].alive = false
	h.stops = append(h.stops, id.PID)
	return nil
}

// Chown records the owner and leaves the file alone, so the steps run
// unprivileged with any uid.
func (h *fakeHost) Chown(path string, uid, gid int) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.owners[path] = [2]int{uid, gid}
	return nil
}

// Lchown records like Chown.
func (h *fakeHost) Lchown(path string, uid, gid int) error { return h.Chown(path, uid, gid) }

// fakeUnit is one unit the fake systemd knows.
type fakeUnit struct {
	enabled, active, failed bool
	pid                     int
}

// fakeSystemd is a service manager in memory. A restarted unit gets a
// process on the fake host (onRestart may make it ready); calls records every
// systemctl call; fail makes the next call of a verb fail.
type fakeSystemd struct {
	mu        sync.Mutex
	h         *fakeHost
	units     map[string]*fakeUnit
	calls     []string
	reloads   int
	fail      map[string]error // verb → error for its next call
	onRestart func(unit string, id proc.Identity)
}

var _ systemd = (*fakeSystemd)(nil)

func newFakeSystemd(h *fakeHost) *fakeSystemd {
	return &fakeSystemd{h: h, units: map[string]*fakeUnit{}, fail: map[string]error{}}
}

func (s *fakeSystemd) unit(name string) *fakeUnit {
	u := s.units[name]
	if u == nil {
		u = &fakeUnit{}
		s.units[name] = u
	}
	return u
}

// start marks a unit active with a fresh main process, as systemd starting
// a unit installed before the test began.
func (s *fakeSystemd) start(name string) proc.Identity {
	id := s.h.spawn(service{Name: name})
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.unit(name)
	u.enabled, u.active, u.pid = true, true, id.PID
	return id
}

// activeUnits lists the units that run, sorted.
func (s *fakeSystemd) activeUnits() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n, u := range s.units {
		if u.active {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func (s *fakeSystemd) Systemctl(ctx context.Context, args ...string) error {
	s.mu.Lock()
	s.calls = append(s.calls, strings.Join(args, " "))
	verb := args[0]
	if err := s.fail[verb]; err != nil {
		delete(s.fail, verb)
		s.mu.Unlock()
		return fmt.Errorf("systemctl %s: %w", strings.Join(args, " "), err)
	}
	if verb == "daemon-reload" {
		s.reloads++
		s.mu.Unlock()
		return nil
	}
	u := s.unit(args[1])
	switch verb {
	case "enable":
		u.enabled = true
	case "disable":
		u.enabled = false
	case "stop":
		if u.active {
			s.h.kill(u.pid)
		}
		u.active, u.pid = false, 0
	case "reset-failed":
		u.failed = false
	case "restart":
		if u.active {
			s.h.kill(u.pid)
		}
		s.mu.Unlock()
		id := s.h.spawn(service{Name: args[1]})
		s.mu.Lock()
		u.active, u.pid = true, id.PID
		s.mu.Unlock()
		if s.onRestart != nil {
			s.onRestart(args[1], id)
		}
		return nil
	default:
		s.mu.Unlock()
		return fmt.Errorf("fake systemctl: verb %q not simulated", verb)
	}
	s.mu.Unlock()
	return nil
}

func (s *fakeSystemd) MainPID(ctx context.Context, unit string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.units[unit]; u != nil && u.active {
		// A main process that died (a crash systemd has not seen yet)
		// still shows until systemd notices.
		return u.pid, nil
	}
	return 0, nil
}

func (s *fakeSystemd) Active(ctx context.Context, unit string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.units[unit]
	return u != nil && u.active
}

func (s *fakeSystemd) Journal(unit string, n int) string {
	return "  fake journal: " + unit + " failed"
}

// fakeNetfilter keeps one table in memory, like harden's own fake.
type fakeNetfilter struct {
	gen   uint32
	table *harden.Table
}

var _ harden.Netfilter = (*fakeNetfilter)(nil)

func (f *fakeNetfilter) Live() (harden.State, error) {
	return harden.State{Gen: f.gen, Table: f.table}, nil
}

func (f *fakeNetfilter) Replace(gen uint32, want *harden.Table) error {
	if gen != f.gen {
		return harden.ErrConcurrentChange
	}
	f.gen++
	f.table = want
	return nil
}

// fakes is a fake host with its systemd, as a system install uses.
type fakes struct {
	host    *fakeHost
	systemd *fakeSystemd
	sys     *system
}

func newFakes() *fakes {
	h := newFakeHost()
	sd := newFakeSystemd(h)
	return &fakes{host: h, systemd: sd, sys: &system{systemd: sd, host: h}}
}
