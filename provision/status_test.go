package provision

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// Status reports each recorded service as its supervisor sees it, and the
// appliance healthy only when both run and the gateway is ready.
func TestGetStatus(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			a := newAppliance(t, kind)
			s, err := getStatus(a.in.o.Root, a.f.sys)
			if err != nil {
				t.Fatal(err)
			}
			if !s.Installed || !s.Healthy || !s.Ready || s.Version != 3 || s.Previous != "demo version 2" || len(s.Services) != 2 {
				t.Fatalf("status %+v", s)
			}
			if kind == SupervisorSystemd {
				// systemd restarted the runtime: status shows its PID now.
				a.f.systemd.Systemctl(context.Background(), "restart", filepath.Base(a.cur.Runtime.Unit))
				s, _ = getStatus(a.in.o.Root, a.f.sys)
				if now := a.f.systemd.units[filepath.Base(a.cur.Runtime.Unit)].pid; s.Services[0].PID != now || !s.Services[0].Running {
					t.Errorf("runtime %+v, want systemd's pid %d", s.Services[0], now)
				}
				a.f.systemd.Systemctl(context.Background(), "stop", filepath.Base(a.cur.Runtime.Unit))
			} else {
				a.f.host.kill(a.cur.Runtime.PID)
			}
			s, _ = getStatus(a.in.o.Root, a.f.sys)
			if s.Healthy || s.Services[0].Running || !s.Services[1].Running {
				t.Errorf("with the runtime down: %+v", s)
			}
			a.gw.metrics.Close()
			if s, _ = getStatus(a.in.o.Root, a.f.sys); s.Ready {
				t.Error("ready without a metrics listener")
			}
		})
	}
	s, err := getStatus(t.TempDir(), newFakes().sys)
	if err != nil || s.Installed || s.Healthy {
		t.Errorf("nothing installed: %+v %v", s, err)
	}
}

// Uninstall takes away everything the installation made, through the
// supervisor that runs it: under systemd every unit is stopped, disabled and
// removed (the scheduled jobs' too); with processes, the processes end and no
// systemctl ever runs.
func TestUninstall(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			a := newAppliance(t, kind)
			in, f := a.in, a.f
			nf := &fakeNetfilter{}
			if _, err := harden.Apply(context.Background(), nf, harden.Options{Policy: harden.EgressPolicy{APIPort: 8443, SSHPort: 22}, Root: in.l.root}); err != nil {
				t.Fatal(err)
			}
			jobs := []string{"qwen-appliance-backup.timer", "qwen-appliance-backup.service", "qwen-appliance-verify.timer", "qwen-appliance-verify.service"}
			for _, j := range jobs {
				os.WriteFile(in.l.path(filepath.Join(harden.UnitDir, j)), []byte("[Unit]\n"), 0o644)
			}
			other := in.l.path(filepath.Join(harden.UnitDir, "someone-else.timer"))
			os.WriteFile(other, nil, 0o644)
			if kind == SupervisorSystemd {
				for _, u := range append([]string{harden.FirewallUnit, "qwen-appliance-backup.timer"}, harden.StoreUnit) {
					f.systemd.start(u)
				}
				a.cur.Store.Unit = in.l.path(filepath.Join(harden.UnitDir, harden.StoreUnit))
				os.WriteFile(a.cur.Store.Unit, []byte("[Unit]\n"), 0o644)
			}
			a.cur.ServiceUser = "" // no accounts to delete: userdel needs root
			state.Save(in.o.Root, a.cur)
			var log strings.Builder
			err := Uninstall(context.Background(), UninstallOptions{Root: in.o.Root, Netfilter: nf, sys: f.sys,
				Log: func(format string, args ...any) { fmt.Fprintf(&log, format+"\n", args...) }})
			if err != nil {
				t.Fatal(err)
			}
			if live := f.host.live(); len(live) != 0 {
				t.Errorf("still running: %v", live)
			}
			if active := f.systemd.activeUnits(); len(active) != 0 {
				t.Errorf("units still active: %v", active)
			}
			if nf.table != nil {
				t.Error("the firewall table survived")
			}
			left, _ := os.ReadDir(in.l.path(harden.UnitDir))
			var names []string
			for _, e := range left {
				names = append(names, e.Name())
			}
			// The firewall unit's wants link went, and with it the
			// directory harden made for it.
			if !slices.Equal(names, []string{"someone-else.timer"}) {
				t.Errorf("unit directory after uninstall: %v", names)
			}
			for _, p := range []string{ConfigDir, LogDir, StateDir, StoreDir} {
				if _, err := os.Stat(in.l.path(p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: %v", p, err)
				}
			}
			switch kind {
			case SupervisorSystemd:
				for _, u := range []string{harden.GatewayUnit, "qwen-appliance-runtime-demo-v3.service", harden.StoreUnit, "qwen-appliance-backup.timer"} {
					if !slices.Contains(f.systemd.calls, "disable "+u) {
						t.Errorf("%s not disabled: %q", u, f.systemd.calls)
					}
				}
				if !slices.Contains(f.systemd.calls, "stop "+harden.FirewallUnit) {
					t.Errorf("the firewall unit was not stopped: %q", f.systemd.calls)
				}
			default:
				if len(f.systemd.calls) != 0 {
					t.Errorf("systemctl ran for an installation without units: %q", f.systemd.calls)
				}
			}
			if !strings.Contains(log.String(), "removing the scheduled job qwen-appliance-backup.timer") {
				t.Errorf("log:\n%s", log.String())
			}
		})
	}
}

// Uninstall carries on past a service it cannot stop, and reports it.
func TestUninstallCarriesOn(t *testing.T) {
	a := newAppliance(t, SupervisorSystemd)
	a.cur.ServiceUser = ""
	state.Save(a.in.o.Root, a.cur)
	a.f.systemd.fail["stop"] = errors.New("unit is masked")
	err := Uninstall(context.Background(), UninstallOptions{Root: a.in.o.Root, Netfilter: &fakeNetfilter{}, sys: a.f.sys})
	if err == nil || !strings.Contains(err.Error(), "unit is masked") {
		t.Fatalf("err = %v, want the refused stop", err)
	}
	if _, err := os.Stat(a.in.l.path(ConfigDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("configuration after a partial uninstall: %v", err)
	}
}

// drift finds services that stopped and a gateway that is not ready, under
// the supervisor each was recorded with.
func TestDriftServices(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			a := newAppliance(t, kind)
			in := a.in
			in.settings = []settingChange{{"listen", "a", "b"}} // the firewall is re-applied anyway
			// Ownership drift is read from the files, which this test
			// cannot give to other users: not compared here.
			a.cur.ServiceUID, a.cur.RuntimeUID = 0, 0
			if d := in.drift(a.cur); len(d) != 0 {
				t.Errorf("a healthy installation drifted: %q", d)
			}
			if kind == SupervisorSystemd {
				a.f.systemd.Systemctl(context.Background(), "stop", filepath.Base(a.cur.Runtime.Unit))
			} else {
				a.f.host.reuse(a.cur.Runtime.PID) // a reboot gave its PID away
			}
			a.gw.status.Store(http.StatusOK)
			a.gw.metrics.Close()
			d := in.drift(a.cur)
			want := []string{"the runtime (" + describe(a.cur.Runtime) + "): not running", "the gateway: not ready (" + a.cur.Gateway.MetricsURL + "/readyz)"}
			if !slices.Equal(d, want) {
				t.Errorf("drift\n got %q\nwant %q", d, want)
			}
		})
	}
}

// heldByGateway frees the running gateway's own ports for the precheck,
// and no others.
func TestHeldByGateway(t *testing.T) {
	a := newAppliance(t, SupervisorProcess)
	in := a.in
	if !in.heldByGateway(a.cur.Gateway.Listen[0]) || !in.heldByGateway("0.0.0.0:"+strings.Split(a.cur.Gateway.Listen[1], ":")[1]) {
		t.Error("the running gateway's ports are not its own")
	}
	if in.heldByGateway("127.0.0.1:1") || in.heldByGateway("no port") {
		t.Error("another port counts as the gateway's")
	}
	a.f.host.kill(a.cur.Gateway.PID)
	if in.heldByGateway(a.cur.Gateway.Listen[0]) {
		t.Error("a stopped gateway holds its port")
	}
}
