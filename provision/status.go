package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

// Status is what is installed and whether it is running and healthy.
type Status struct {
	Installed bool            `json:"installed"`
	Bundle    string          `json:"bundle,omitempty"`
	Version   uint64          `json:"version,omitempty"`
	Previous  string          `json:"previous,omitempty"` // the release rollback would serve
	Updated   time.Time       `json:"updated,omitempty"`
	Services  []ServiceStatus `json:"services,omitempty"`
	Gateway   string          `json:"gateway,omitempty"`
	Ready     bool            `json:"ready"` // the gateway answers /readyz (its upstream model is loaded)
	Store     string          `json:"store,omitempty"`
	Backend   string          `json:"backend,omitempty"`
	Healthy   bool            `json:"healthy"`
}

// ServiceStatus is one supervised process.
type ServiceStatus struct {
	Name    string   `json:"name"`
	PID     int      `json:"pid"`            // the main process now
	Unit    string   `json:"unit,omitempty"` // its systemd unit file, when systemd runs it
	Running bool     `json:"running"`
	Listen  []string `json:"listen,omitempty"`
	Log     string   `json:"log,omitempty"`
}

// GetStatus reads the state under root and checks the services it records.
func GetStatus(root string) (*Status, error) { return getStatus(root, realSystem()) }

func getStatus(root string, sys *system) (*Status, error) {
	st, err := state.Load(root)
	if errors.Is(err, state.ErrNotInstalled) {
		return &Status{}, nil
	}
	if err != nil {
		return nil, err
	}
	s := &Status{Installed: true, Bundle: st.Bundle.Name, Version: st.Bundle.Version, Updated: st.Updated,
		Gateway: st.Gateway.URL, Store: st.Store.Dir, Backend: st.Store.Backend}
	if p := st.Previous; p != nil {
		s.Previous = fmt.Sprintf("%s version %d", p.Name, p.Version)
	}
	s.Healthy = true
	sups := newSupervisors(sys, layout{})
	for _, svc := range []state.Service{st.Runtime, st.Gateway.Service} {
		sup := sups.of(svc)
		ss := ServiceStatus{Name: svc.Name, PID: sup.mainPID(svc), Unit: svc.Unit, Running: sup.running(svc), Listen: svc.Listen, Log: svc.Log}
		s.Healthy = s.Healthy && ss.Running
		s.Services = append(s.Services, ss)
	}
	s.Ready = st.Gateway.MetricsURL != "" && httpOK(st.Gateway.MetricsURL+"/readyz")()
	s.Healthy = s.Healthy && s.Ready
	return s, nil
}

// UninstallOptions say how far uninstall goes.
type UninstallOptions struct {
	Root        string
	CryptoErase bool // destroy the store's key material first, so its data is unrecoverable
	Netfilter   harden.Netfilter
	Log         func(format string, args ...any)

	sys *system // the host when nil (tests pass fakes)
}

// Uninstall stops the services, removes the firewall table and its files,
// the store (crypto-erased when asked), configuration, logs, the program copy
// and the manual page, the service users
// qwen-appliance made (with their groups) and the state record. It carries on
// past failures and returns them all.
func Uninstall(ctx context.Context, o UninstallOptions) error {
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return err
	}
	l := layout{root: harden.Root(root)}
	if root == "/" {
		l.root = ""
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if _, err := state.Load(root); err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	lk, err := l.lock()
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	defer lk.release()
	st, err := state.Load(root) // under the lock: as the last install left it
	if err != nil {
		return fmt.Errorf("uninstall: %w", err)
	}
	sups := newSupervisors(orReal(o.sys), l)
	// The supervisor the appliance runs under (its gateway's) removes the
	// firewall's boot unit and the scheduled jobs' units.
	sup := sups.of(st.Gateway.Service)
	var errs []error
	for _, svc := range []state.Service{st.Gateway.Service, st.Runtime} {
		if svc.PID > 0 || svc.Unit != "" {
			logf("stopping %s (%s)", svc.Name, describe(svc))
			err := sups.of(svc).stop(svc, 30*time.Second)
			if m := (*proc.Mismatch)(nil); errors.As(err, &m) {
				// Not ours: the recorded process is gone (a reboot,
				// a crash) and another holds its PID now.
				logf("%v", err)
				err = nil
			}
			errs = append(errs, err)
		}
	}
	nf := o.Netfilter
	if nf == nil {
		if k, err := harden.Open(); err != nil {
			errs = append(errs, err)
		} else {
			nf = k
		}
	}
	if nf != nil {
		logf("removing table inet %s and its files", harden.TableName)
		if err := harden.Remove(nf, l.root); err != nil && !errors.Is(err, harden.ErrNotApplied) {
			errs = append(errs, err)
		}
		// Under systemd the firewall unit stays "active (exited)" until
		// stopped; it has no ExecStop, the table is already gone.
		errs = append(errs, sup.removeUnit(ctx, harden.FirewallUnit), sup.reload(ctx))
	}
	if st.Store.Unit != "" {
		// Stopping it locks the store (its ExecStop).
		logf("removing the store's boot unlock unit %s", harden.StoreUnit)
		errs = append(errs, sups.units.removeUnit(ctx, harden.StoreUnit))
	}
	// The appliance's scheduled jobs (backup schedule, verify-schedule)
	// would fail on every run once it is gone: each qwen-appliance-* timer
	// goes, with its service.
	timers, _ := filepath.Glob(l.path(filepath.Join(harden.UnitDir, "qwen-appliance-*.timer")))
	for _, t := range timers {
		svc := strings.TrimSuffix(t, ".timer") + ".service"
		logf("removing the scheduled job %s", filepath.Base(t))
		errs = append(errs, sup.removeUnit(ctx, filepath.Base(t)), sup.removeUnit(ctx, filepath.Base(svc)))
	}
	if st.Store.Dir != "" {
		if o.CryptoErase && st.Store.Backend != string(BackendNone) {
			s, err := storage.Open(st.Store.Dir, storage.Options{})
			if err == nil {
				logf("crypto-erasing the model store %s", st.Store.Dir)
				_, err = s.Erase(ctx)
			}
			errs = append(errs, err)
		}
		logf("removing the model store %s", st.Store.Dir)
		errs = append(errs, os.RemoveAll(st.Store.Dir), removeIfExists(storage.MetadataPath(st.Store.Dir)))
	}
	for _, p := range []string{l.path(ConfigDir), l.path(LogDir), filepath.Dir(l.path(ProgramPath)), l.path(ManPagePath)} {
		logf("removing %s", p)
		errs = append(errs, os.RemoveAll(p))
	}
	// The state directory goes too, all but the lock, which is held
	// until the very end so no install starts before the users are gone.
	logf("removing %s", l.path(StateDir))
	errs = append(errs, removeAllBut(l.path(StateDir), LockFile))
	defer func() { os.Remove(l.lockPath()); os.Remove(l.path(StateDir)) }()
	users := st.CreatedUsers
	if users == nil && st.ServiceUser != "" {
		users = []string{st.ServiceUser} // recorded before CreatedUsers existed
	}
	for _, u := range users {
		logf("removing the user and group %s", u)
		errs = append(errs, harden.DeleteUser(ctx, l.root, u))
	}
	return errors.Join(errs...)
}

// removeAllBut removes everything in dir except the entry named keep.
func removeAllBut(dir, keep string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Name() != keep {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
