package provision

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

var kinds = []string{SupervisorProcess, SupervisorSystemd}

// fakeInstaller is an installer for a sandbox root whose host is f, starting
// services with the supervisor named kind.
func fakeInstaller(t *testing.T, f *fakes, kind string) (*installer, *bytes.Buffer) {
	t.Helper()
	return fakeInstallerAt(t, f, kind, t.TempDir())
}

// fakeInstallerAt is fakeInstaller for the sandbox root root: a later run
// on the same installation.
func fakeInstallerAt(t *testing.T, f *fakes, kind, root string) (*installer, *bytes.Buffer) {
	t.Helper()
	var log bytes.Buffer
	l := layout{root: harden.Root(root)}
	in := &installer{o: Options{Root: root, Store: l.path(StoreDir), Now: time.Now, ReadyTimeout: 2 * time.Second, sys: f.sys},
		l: l, log: &log, sys: f.sys, sups: newSupervisors(f.sys, l)}
	in.sup = in.sups.pick(kind)
	in.j = &journal{path: l.journal()}
	in.serviceExe = l.path(ProgramPath)
	for _, d := range []string{filepath.Join(harden.UnitDir), LogDir, ConfigDir} {
		if err := os.MkdirAll(l.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return in, &log
}

// testService is a service as the runtime step makes it.
func testService(in *installer, name string) service {
	return service{Name: name, Args: []string{"run", "--port", "8501"}, Log: in.l.log(name), UID: 1001, GID: 1001,
		UnitName: "qwen-appliance-" + name + "-test.service", Unit: harden.Service{Description: "test " + name, User: harden.RuntimeUser}}
}

func always() bool { return true }

// The undo a service's start registers stops it, under either supervisor:
// an undo that forgot the service would leave it running after a failed
// install.
func TestStartServiceUndo(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFakes()
			in, _ := fakeInstaller(t, f, kind)
			if err := in.j.begin(); err != nil {
				t.Fatal(err)
			}
			s := testService(in, "runtime")
			unit, id, err := in.startService(context.Background(), s, always)
			if err != nil {
				t.Fatal(err)
			}
			if !f.host.Alive(id.PID) {
				t.Fatalf("started pid %d is not running", id.PID)
			}
			rec := state.Service{Name: "runtime", PID: id.PID, Start: id.Start, Boot: id.Boot, Unit: unit}
			if !in.running(rec) {
				t.Fatal("the started service does not count as running")
			}
			j := readJournal(t, in)
			switch kind {
			case SupervisorSystemd:
				if unit != in.l.path(filepath.Join(harden.UnitDir, s.UnitName)) {
					t.Errorf("unit file %q", unit)
				}
				text, err := os.ReadFile(unit)
				if err != nil || !strings.Contains(string(text), "ExecStart="+in.serviceExe+" run --port 8501") {
					t.Errorf("unit file: %v\n%s", err, text)
				}
				if !slices.Equal(j.Units, []string{s.UnitName}) || len(j.Procs) != 0 {
					t.Errorf("journal %+v: want the unit", j)
				}
				if got := f.host.owners[s.Log]; got != [2]int{1001, 1001} {
					t.Errorf("log owner %v: want the service user's", got)
				}
			default:
				if unit != "" {
					t.Errorf("a process has no unit file: %q", unit)
				}
				if !slices.Equal(j.Procs, []proc.Identity{id}) || len(j.Units) != 0 {
					t.Errorf("journal %+v: want the process's identity", j)
				}
			}
			if err := in.undo(); err != nil {
				t.Fatal(err)
			}
			if live := f.host.live(); len(live) != 0 {
				t.Errorf("still running after undo: %v", live)
			}
			if active := f.systemd.activeUnits(); len(active) != 0 {
				t.Errorf("units active after undo: %v", active)
			}
			if kind == SupervisorSystemd {
				if _, err := os.Stat(unit); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("unit file after undo: %v", err)
				}
				if u := f.systemd.units[s.UnitName]; u.enabled {
					t.Error("unit still enabled after undo")
				}
			}
			if _, err := os.Stat(in.j.path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("journal after undo: %v", err)
			}
		})
	}
}

func readJournal(t *testing.T, in *installer) journal {
	t.Helper()
	var j journal
	data, err := os.ReadFile(in.j.path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &j); err != nil {
		t.Fatal(err)
	}
	return j
}

// A service that dies before it is ready fails its step with its log's last
// lines, and the undo still runs for it.
func TestStartServiceDiesBeforeReady(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFakes()
			in, _ := fakeInstaller(t, f, kind)
			s := testService(in, "runtime")
			crash := func(pid int) {
				os.WriteFile(s.Log, []byte("panic: no weights\n"), 0o600)
				f.host.kill(pid)
			}
			f.host.onStart = func(_ service, id proc.Identity) { crash(id.PID) }
			f.systemd.onRestart = func(_ string, id proc.Identity) { crash(id.PID) }
			_, _, err := in.startService(context.Background(), s, func() bool { return false })
			if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "panic: no weights") {
				t.Fatalf("err = %v, want the death and the log's last line", err)
			}
			if err := in.undo(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(in.l.path(filepath.Join(harden.UnitDir, s.UnitName))); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("unit file of a failed start: %v", err)
			}
			if active := f.systemd.activeUnits(); len(active) != 0 {
				t.Errorf("units active: %v", active)
			}
		})
	}
}

// A service that never gets ready times out, and its undo stops it.
func TestStartServiceNotReady(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			f := newFakes()
			in, _ := fakeInstaller(t, f, kind)
			in.o.ReadyTimeout = 300 * time.Millisecond
			_, _, err := in.startService(context.Background(), testService(in, "gateway"), func() bool { return false })
			if err == nil || !strings.Contains(err.Error(), "not ready after 300ms") {
				t.Fatalf("err = %v", err)
			}
			if live := f.host.live(); len(live) != 1 {
				t.Fatalf("running before undo: %v, want the one started", live)
			}
			if err := in.undo(); err != nil {
				t.Fatal(err)
			}
			if live := f.host.live(); len(live) != 0 {
				t.Errorf("running after undo: %v", live)
			}
		})
	}
}

// A unit systemd refuses to start fails with what systemd logged about it.
func TestStartUnitRefused(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorSystemd)
	f.systemd.fail["restart"] = errors.New("exit status 1")
	s := testService(in, "runtime")
	_, _, err := in.startService(context.Background(), s, always)
	if err == nil || !strings.Contains(err.Error(), "fake journal: "+s.UnitName) {
		t.Fatalf("err = %v, want systemd's journal lines", err)
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(in.l.path(filepath.Join(harden.UnitDir, s.UnitName))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unit file left after a refused start: %v", err)
	}
	if !slices.Contains(f.systemd.calls, "disable "+s.UnitName) || !slices.Contains(f.systemd.calls, "reset-failed "+s.UnitName) {
		t.Errorf("calls %q: want the unit disabled and its failure reset", f.systemd.calls)
	}
}

// A process that cannot be started at all leaves nothing to stop.
func TestStartProcessFails(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	f.host.failStart = errors.New("exec format error")
	if _, _, err := in.startService(context.Background(), testService(in, "runtime"), always); err == nil {
		t.Fatal("no error")
	}
	if err := in.undo(); err != nil {
		t.Fatalf("undo of a start that never happened: %v", err)
	}
	if len(f.host.stops) != 0 {
		t.Errorf("stopped %v, want nothing", f.host.stops)
	}
}

// removeUnit stops an active unit, disables and deletes its file, reloads,
// and resets a failed state; a unit already gone costs only the reset.
func TestRemoveUnit(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorSystemd)
	name := "qwen-appliance-x.service"
	path := in.l.path(filepath.Join(harden.UnitDir, name))
	os.WriteFile(path, []byte("[Unit]\n"), 0o644)
	f.systemd.start(name)
	if err := in.sups.units.removeUnit(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	want := []string{"stop " + name, "disable " + name, "daemon-reload", "reset-failed " + name}
	if !slices.Equal(f.systemd.calls, want) {
		t.Errorf("calls %q, want %q", f.systemd.calls, want)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unit file: %v", err)
	}
	f.systemd.calls = nil
	if err := in.sups.units.removeUnit(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	if want := []string{"reset-failed " + name}; !slices.Equal(f.systemd.calls, want) {
		t.Errorf("second removal: calls %q, want %q", f.systemd.calls, want)
	}
	// A stop systemd refuses is reported, and the rest still happens.
	os.WriteFile(path, []byte("[Unit]\n"), 0o644)
	f.systemd.start(name)
	f.systemd.fail["stop"] = errors.New("access denied")
	if err := in.sups.units.removeUnit(context.Background(), name); err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("err = %v, want the refused stop", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unit file after a refused stop: %v", err)
	}
}

// The process supervisor removes a scheduled job's unit file and nothing
// else; nothing was loaded, so nothing is reloaded.
func TestProcessesRemoveUnit(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	path := in.l.path(filepath.Join(harden.UnitDir, "qwen-appliance-backup.timer"))
	os.WriteFile(path, []byte("[Timer]\n"), 0o644)
	for range 2 {
		if err := in.sups.procs.removeUnit(context.Background(), filepath.Base(path)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("timer file: %v", err)
	}
	if err := in.sups.procs.reload(context.Background()); err != nil || len(f.systemd.calls) != 0 {
		t.Errorf("reload: %v, calls %q", err, f.systemd.calls)
	}
}

// A recorded service answers to the supervisor that started it, whatever
// this attempt starts services with: a unit's main process is what systemd
// names now (it may have restarted it), a process's is the one recorded, and
// a recorded PID another process holds now is never signalled.
func TestRecordedServices(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	first := f.systemd.start(harden.GatewayUnit)
	unitSvc := state.Service{Name: "gateway", PID: first.PID, Start: first.Start, Boot: first.Boot, Unit: in.l.path(filepath.Join(harden.UnitDir, harden.GatewayUnit))}
	// systemd restarted the gateway since install recorded it.
	f.systemd.Systemctl(context.Background(), "restart", harden.GatewayUnit)
	now := f.systemd.units[harden.GatewayUnit].pid
	if now == first.PID {
		t.Fatal("restart kept the pid")
	}
	if got := in.sups.of(unitSvc).mainPID(unitSvc); got != now {
		t.Errorf("mainPID = %d, want systemd's %d", got, now)
	}
	if !in.running(unitSvc) {
		t.Error("an active unit is not running")
	}
	if err := in.signal(unitSvc, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if p := f.host.proc(now); !slices.Equal(p.signals, []syscall.Signal{syscall.SIGHUP}) {
		t.Errorf("signals to the unit's main process: %v", p.signals)
	}

	id := f.host.spawn(service{Name: "runtime"})
	procSvc := state.Service{Name: "runtime", PID: id.PID, Start: id.Start, Boot: id.Boot}
	if !in.running(procSvc) || in.sups.of(procSvc).mainPID(procSvc) != id.PID {
		t.Error("the recorded process is not running as recorded")
	}
	f.host.reuse(id.PID)
	if in.running(procSvc) {
		t.Error("a PID another process holds now counts as the service running")
	}
	var m *proc.Mismatch
	if err := in.signal(procSvc, syscall.SIGHUP); !errors.As(err, &m) {
		t.Errorf("signal to a reused PID: %v, want a *proc.Mismatch", err)
	}
	if err := in.stopService(procSvc, time.Second); !errors.As(err, &m) {
		t.Errorf("stop of a reused PID: %v, want a *proc.Mismatch", err)
	}
	if !f.host.Alive(id.PID) {
		t.Error("the stranger holding the PID was stopped")
	}

	// A unit that is not running cannot be signalled.
	f.systemd.Systemctl(context.Background(), "stop", harden.GatewayUnit)
	if in.running(unitSvc) {
		t.Error("a stopped unit is running")
	}
	if err := in.signal(unitSvc, syscall.SIGHUP); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Errorf("signal to a stopped unit: %v", err)
	}
}

// The supervisor is chosen once from the options and the installation.
func TestChooseSupervisor(t *testing.T) {
	units := &state.State{Gateway: state.Gateway{Service: state.Service{Unit: "/etc/systemd/system/qwen-appliance-gateway.service"}}}
	procs := &state.State{Gateway: state.Gateway{Service: state.Service{PID: 12}}}
	for _, c := range []struct {
		want string
		root harden.Root
		prev *state.State
		got  string
		err  string
	}{
		{want: SupervisorProcess, root: "", got: SupervisorProcess},
		{want: SupervisorProcess, root: "/sandbox", prev: units, got: SupervisorProcess},
		{want: "", root: "/sandbox", prev: units, got: SupervisorSystemd},
		{want: "", root: "", prev: procs, got: SupervisorProcess},
		{want: "", root: "/sandbox", got: SupervisorProcess},
		{want: SupervisorSystemd, root: "/sandbox", err: "need --root /"},
		{want: "runit", err: `supervisor "runit"`},
	} {
		got, err := chooseSupervisor(c.want, c.root, c.prev)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("chooseSupervisor(%q, %q): %v, want %q", c.want, c.root, err, c.err)
			}
			continue
		}
		if err != nil || got != c.got {
			t.Errorf("chooseSupervisor(%q, %q, %v) = %q, %v; want %q", c.want, c.root, c.prev != nil, got, err, c.got)
		}
	}
	sups := newSupervisors(newFakes().sys, layout{})
	if !sups.pick(SupervisorSystemd).sandboxed() || sups.pick(SupervisorProcess).sandboxed() {
		t.Error("only units run in harden's sandbox")
	}
}

// A store or root the units' sandbox hides is refused up front.
func TestVisibleToUnits(t *testing.T) {
	for p, ok := range map[string]bool{"/var/lib/qwen-appliance/store": true, "/tmp": false, "/tmp/x/store": false, "/home/op/store": false,
		"/homestead/store": true, "/run/user/0/s": false, "/srv/store": true} {
		if err := visibleToUnits(p); (err == nil) != ok {
			t.Errorf("visibleToUnits(%s) = %v, want ok %v", p, err, ok)
		}
	}
}

// waitFor stops at readiness, at the process's death, at the deadline or at
// cancellation, whichever comes first.
func TestWaitFor(t *testing.T) {
	h := newFakeHost()
	log := filepath.Join(t.TempDir(), "svc.log")
	os.WriteFile(log, []byte("one\ntwo\n"), 0o600)
	s := service{Name: "svc", Log: log}
	id := h.spawn(s)
	ctx := context.Background()
	if err := waitFor(ctx, h, s, id.PID, time.Second, always); err != nil {
		t.Errorf("ready: %v", err)
	}
	if err := waitFor(ctx, h, s, id.PID, 100*time.Millisecond, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "not ready after 100ms") || !strings.Contains(err.Error(), "  two") {
		t.Errorf("timeout: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := waitFor(cctx, h, s, id.PID, time.Minute, func() bool { return false }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	h.kill(id.PID)
	if err := waitFor(ctx, h, s, id.PID, time.Minute, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Errorf("died: %v", err)
	}
	// Ready wins over a death noticed in the same poll: the service said
	// it serves.
	if err := waitFor(ctx, h, s, id.PID, time.Minute, always); err != nil {
		t.Errorf("ready then died: %v", err)
	}
}

// logSays reads only what was appended since from, and wants every part on
// one line with the prefix.
func TestLogSays(t *testing.T) {
	log := filepath.Join(t.TempDir(), "runtime.log")
	os.WriteFile(log, []byte("ready: ollama at http://127.0.0.1:8501 (old)\n"), 0o600)
	from := logSize(log)
	ready := logSays(log, from, "ready:", " at http://127.0.0.1:8501 ")
	if ready() {
		t.Fatal("an old line counted")
	}
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("ready: ollama at http://127.0.0.1:8502 (other)\nnoise ready: at http://127.0.0.1:8501 \n")
	if ready() {
		t.Fatal("another port's line, or a line without the prefix, counted")
	}
	f.WriteString("ready: ollama at http://127.0.0.1:8501 (new)\n")
	f.Close()
	if !ready() {
		t.Fatal("the new ready line did not count")
	}
	if logSays(filepath.Join(t.TempDir(), "none"), 0, "")() {
		t.Fatal("a missing log says something")
	}
	if logSays(log, 1<<20, "")() {
		t.Fatal("a log shorter than the offset (rotated) says something")
	}
	if got := tail(log, 1); got != "  ready: ollama at http://127.0.0.1:8501 (new)" {
		t.Errorf("tail = %q", got)
	}
}

// The dry run's plan says how each service would run: a hardened unit
// (named, under the root) or a detached process.
func TestPlanNamesTheSupervisor(t *testing.T) {
	m := &manifests.Manifest{Name: "demo", Version: 4, Runtime: manifests.Runtime{Kind: "ollama"}}
	for _, kind := range kinds {
		in, _ := fakeInstaller(t, newFakes(), kind)
		in.o.Listen, in.o.MetricsListen = DefaultListen, DefaultMetricsListen
		plan := strings.Join(in.plan(m), "\n")
		units := []string{"qwen-appliance-runtime-demo-v4.service (enabled)", harden.GatewayUnit + " (enabled)"}
		for _, u := range units {
			if strings.Contains(plan, u) != (kind == SupervisorSystemd) {
				t.Errorf("%s plan mentions %s: %v\n%s", kind, u, kind == SupervisorSystemd, plan)
			}
		}
		if n := strings.Count(plan, "detached process"); (n == 2) != (kind == SupervisorProcess) {
			t.Errorf("%s plan: %d detached processes\n%s", kind, n, plan)
		}
	}
}
