package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// installSteps are install's steps in order, each ending at a fault point
// (stepDone); "begin" is the journal's start, before the first step.
var installSteps = []string{"begin", "firewall", "store", "copy-in", "kb", "runtime", "gateway", "smoke", "state"}

// crashed is what an attempt killed after a step left behind.
type crashed struct {
	runtime, gateway state.Service // zero when not started
	token            string        // the admin token's ID, when made
	stoppedPrev      bool          // the previous gateway was stopped to restart it
	record           *state.State  // the state record, when the state step ran
}

var testGW = harden.Identity{User: harden.ServiceUser, UID: 1001, GID: 1001}
var testRT = harden.Identity{User: harden.RuntimeUser, UID: 1002, GID: 1002}

// runUntil runs the parts of install that the journal and the host see
// (services started, the admin token made, the record saved), through the
// real step code and the fake host, and stops after step as a SIGKILL
// would: no undo, no journal cleanup.
func runUntil(t *testing.T, in *installer, step string) crashed {
	t.Helper()
	ctx := context.Background()
	var c crashed
	for _, s := range installSteps {
		switch s {
		case "begin":
			if err := in.j.begin(); err != nil {
				t.Fatal(err)
			}
		case "runtime":
			svc := service{Name: "runtime", Args: []string{"run"}, Log: in.l.log("runtime"), UID: testRT.UID, GID: testRT.GID}
			if in.sup.sandboxed() {
				svc.UnitName, _ = harden.RuntimeUnitFor("demo-v2")
				svc.Unit = harden.Service{Description: "runtime", User: harden.RuntimeUser}
			}
			unit, id, err := in.startService(ctx, svc, always)
			if err != nil {
				t.Fatal(err)
			}
			c.runtime = state.Service{Name: "runtime", PID: id.PID, Start: id.Start, Boot: id.Boot, Unit: unit}
		case "gateway":
			if err := in.adminToken(testGW); err != nil {
				t.Fatal(err)
			}
			if j := readJournal(t, in); j.AdminToken != "" {
				c.token = j.AdminToken
			}
			if in.prev != nil && !in.sup.sandboxed() {
				// The gateway's settings changed: the old one stops first.
				if err := in.stopService(in.prev.Gateway.Service, time.Second); err != nil {
					t.Fatal(err)
				}
				c.stoppedPrev = true
			}
			svc := service{Name: "gateway", Args: []string{"serve"}, Log: in.l.log("gateway"), UID: testGW.UID, GID: testGW.GID}
			if in.sup.sandboxed() {
				svc.UnitName, svc.Unit = harden.GatewayUnit, harden.Service{Description: "gateway"}
			}
			unit, id, err := in.startService(ctx, svc, always)
			if err != nil {
				t.Fatal(err)
			}
			c.gateway = state.Service{Name: "gateway", PID: id.PID, Start: id.Start, Boot: id.Boot, Unit: unit}
		case "state":
			st := &state.State{Root: string(in.l.root), Bundle: state.Bundle{Name: "demo", Version: 2},
				Runtime: c.runtime, Gateway: state.Gateway{Service: c.gateway}, ServiceUID: testGW.UID, RuntimeUID: testRT.UID}
			if err := in.saveState(st); err != nil {
				t.Fatal(err)
			}
			c.record = st
		}
		if s == step {
			return c
		}
	}
	t.Fatalf("no step %q", step)
	return c
}

// previousInstallation records and starts a version-1 installation under
// kind's supervisor, as the fake host's own services.
func previousInstallation(t *testing.T, f *fakes, in *installer, kind string) *state.State {
	t.Helper()
	prev := &state.State{Root: string(in.l.root), Bundle: state.Bundle{Name: "demo", Version: 1},
		ServiceUser: testGW.User, ServiceUID: testGW.UID, ServiceGID: testGW.GID, RuntimeUser: testRT.User, RuntimeUID: testRT.UID, RuntimeGID: testRT.GID}
	record := func(name, unit string) state.Service {
		if kind == SupervisorSystemd {
			id := f.systemd.start(unit)
			path := in.l.path(filepath.Join(harden.UnitDir, unit))
			if err := os.WriteFile(path, []byte("[Unit]\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return state.Service{Name: name, PID: id.PID, Start: id.Start, Boot: id.Boot, Unit: path}
		}
		id := f.host.spawn(service{Name: name + "-v1"})
		return state.Service{Name: name, PID: id.PID, Start: id.Start, Boot: id.Boot}
	}
	prev.Runtime = record("runtime", "qwen-appliance-runtime-demo-v1.service")
	prev.Gateway.Service = record("gateway", harden.GatewayUnit)
	// The installation's operator holds an admin token already.
	s, err := tokens.Load(in.l.tokens())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Create(tokens.CreateOptions{Name: "ops", Role: tokens.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(in.l.tokens()); err != nil {
		t.Fatal(err)
	}
	if err := state.Save(string(in.l.root), prev); err != nil {
		t.Fatal(err)
	}
	return prev
}

// An install killed after any step is cleaned up by the next run: what the
// crashed attempt started is stopped (its units removed), what the
// installation records keeps running, the admin token nobody saw is revoked,
// and the journal is gone. First installs and upgrades, under either
// supervisor.
func TestRecoverAfterCrashAtEachStep(t *testing.T) {
	for _, kind := range kinds {
		for _, upgrade := range []bool{false, true} {
			for _, step := range installSteps {
				t.Run(fmt.Sprintf("%s/upgrade=%v/%s", kind, upgrade, step), func(t *testing.T) {
					f := newFakes()
					in, _ := fakeInstaller(t, f, kind)
					if upgrade {
						in.prev = previousInstallation(t, f, in, kind)
					}
					c := runUntil(t, in, step)

					// The next run, as Install starts it: the record as
					// the crashed attempt left it is the installation.
					next, log := fakeInstallerAt(t, f, kind, in.o.Root)
					switch st, err := state.Load(string(in.l.root)); {
					case err == nil:
						next.prev = st
					case !errors.Is(err, state.ErrNotInstalled):
						t.Fatal(err)
					}
					if err := next.recover(); err != nil {
						t.Fatal(err)
					}
					checkRecovered(t, f, next, c, log.String())
				})
			}
		}
	}
}

func checkRecovered(t *testing.T, f *fakes, next *installer, c crashed, log string) {
	t.Helper()
	recorded := func(svc state.Service) bool {
		if next.prev == nil {
			return false
		}
		for _, r := range []state.Service{next.prev.Runtime, next.prev.Gateway.Service} {
			if identityOf(r) == identityOf(svc) || (svc.Unit != "" && svc.Unit == r.Unit) {
				return true
			}
		}
		return false
	}
	for _, svc := range []state.Service{c.runtime, c.gateway} {
		if svc.Name == "" {
			continue
		}
		up := next.running(svc)
		if recorded(svc) && !up {
			t.Errorf("the %s the installation records was stopped by recovery", svc.Name)
		}
		if !recorded(svc) && up {
			t.Errorf("the crashed attempt's %s (%s) still runs after recovery", svc.Name, describe(svc))
		}
		if svc.Unit != "" && !recorded(svc) {
			if _, err := os.Stat(svc.Unit); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the crashed attempt's unit %s: %v", svc.Unit, err)
			}
		}
	}
	if p := next.prev; p != nil && c.record == nil {
		// An upgrade's previous services: the runtime always runs on; the
		// gateway unless the attempt had stopped it to restart it.
		if !next.running(p.Runtime) {
			t.Error("recovery stopped the previous installation's runtime")
		}
		if !c.stoppedPrev && !next.running(p.Gateway.Service) {
			t.Error("recovery stopped the previous installation's gateway")
		}
	}
	if c.token != "" {
		s, err := tokens.Load(next.l.tokens())
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range s.Tokens {
			want := "active"
			if tok.ID == c.token {
				want = "revoked"
			}
			if got := tok.State(time.Now()); got != want {
				t.Errorf("token %s (%s) is %s after recovery, want %s", tok.ID, tok.Name, got, want)
			}
		}
		if !strings.Contains(log, "never shown") {
			t.Errorf("recovery did not say it revoked %s:\n%s", c.token, log)
		}
	}
	if _, err := os.Stat(next.j.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal after recovery: %v", err)
	}
}

// After a power loss every recorded PID may belong to another process:
// recovery stops none of them, says so, and still clears the journal.
func TestRecoverAfterPowerLoss(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	c := runUntil(t, in, "smoke")
	var strangers []proc.Identity
	for _, svc := range []state.Service{c.runtime, c.gateway} {
		strangers = append(strangers, f.host.reuse(svc.PID))
	}
	next, log := fakeInstallerAt(t, f, SupervisorProcess, in.o.Root)
	if err := next.recover(); err != nil {
		t.Fatal(err)
	}
	for _, s := range strangers {
		if !f.host.Alive(s.PID) || len(f.host.proc(s.PID).signals) > 0 {
			t.Errorf("pid %d, another process's now, was signalled", s.PID)
		}
	}
	if len(f.host.stops) != 0 {
		t.Errorf("stopped %v", f.host.stops)
	}
	if n := strings.Count(log.String(), "not stopping pid"); n != 2 {
		t.Errorf("%d 'not stopping' lines, want 2:\n%s", n, log)
	}
	if _, err := os.Stat(next.j.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal: %v", err)
	}
}

// A process that exited on its own since the crash is nothing to stop.
func TestRecoverProcessAlreadyGone(t *testing.T) {
	f := newFakes()
	in, log := fakeInstaller(t, f, SupervisorProcess)
	c := runUntil(t, in, "runtime")
	f.host.kill(c.runtime.PID)
	if err := in.recover(); err != nil {
		t.Fatal(err)
	}
	if len(f.host.stops) != 0 || strings.Contains(log.String(), "stopping pid") {
		t.Errorf("stopped %v:\n%s", f.host.stops, log)
	}
}

// Recovery that cannot remove a unit fails, and keeps the journal for the
// next try; an unreadable journal is dropped with a warning.
func TestRecoverFailures(t *testing.T) {
	f := newFakes()
	in, log := fakeInstaller(t, f, SupervisorSystemd)
	c := runUntil(t, in, "runtime")
	f.systemd.fail["stop"] = errors.New("connection refused")
	if err := in.recover(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("recover = %v, want systemd's refusal", err)
	}
	if _, err := os.Stat(in.j.path); err != nil {
		t.Fatalf("the journal must stay for the next try: %v", err)
	}
	if err := in.recover(); err != nil {
		t.Fatal(err)
	}
	if in.running(c.runtime) {
		t.Error("the unit survived the second recovery")
	}

	if err := os.WriteFile(in.j.path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.recover(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "unreadable journal") {
		t.Errorf("log:\n%s", log)
	}
	if _, err := os.Stat(in.j.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unreadable journal kept: %v", err)
	}
}

// The journal is the attempt's: begin clears what an earlier one recorded,
// and each record is on disk before the thing it names exists.
func TestJournalRecords(t *testing.T) {
	dir := t.TempDir()
	j := &journal{path: filepath.Join(dir, "state", "install-journal.json")}
	j.Units, j.AdminToken = []string{"old.service"}, "tok_old"
	if err := j.begin(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(j.path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("journal directory: %v %v", fi, err)
	}
	id := proc.Identity{PID: 7, Start: 9, Boot: "b"}
	for _, err := range []error{j.addUnit("a.service"), j.addProc(id), j.setAdminToken("tok_new")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	var got journal
	data, _ := os.ReadFile(j.path)
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Units, []string{"a.service"}) || !slices.Equal(got.Procs, []proc.Identity{id}) || got.AdminToken != "tok_new" {
		t.Errorf("journal %+v", got)
	}
	if err := j.finish(); err != nil {
		t.Fatal(err)
	}
	if err := j.finish(); err != nil {
		t.Errorf("second finish: %v", err)
	}
}
