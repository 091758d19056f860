package provision

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
)

// checkingKB is a knowledge base whose Check refuses what bad names.
type checkingKB struct {
	fakeKB
	bad string
}

func (k checkingKB) Check(_ context.Context, path string) error {
	if path == k.bad {
		return errors.New("database disk image is malformed")
	}
	return nil
}

// restoreSetup is an appliance whose store holds a knowledge base (with a
// write-ahead log) and a backed-up database to put in its place.
func restoreSetup(t *testing.T) (a *appliance, path, backup string) {
	t.Helper()
	a = newAppliance(t, SupervisorProcess)
	path = KBPath(a.in.o.Store)
	os.MkdirAll(filepath.Dir(path), 0o700)
	os.WriteFile(path, []byte("current"), 0o600)
	os.WriteFile(path+"-wal", []byte("current wal"), 0o600)
	backup = filepath.Join(t.TempDir(), "kb.db")
	os.WriteFile(backup, []byte("backed up"), 0o600)
	a.in.o.KB, a.in.o.KBRestore = checkingKB{}, backup
	return a, path, backup
}

func read(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return string(data)
}

// A backed-up knowledge base is put in place with the gateway stopped;
// the replaced database and its log come back if the attempt fails, and
// are gone once it succeeds.
func TestPlaceKB(t *testing.T) {
	a, path, _ := restoreSetup(t)
	in := a.in
	if err := in.placeKB(context.Background(), path, self()); err != nil {
		t.Fatal(err)
	}
	if in.running(a.cur.Gateway.Service) || !in.gatewayStopped {
		t.Error("the gateway kept serving the database being replaced")
	}
	if got := read(t, path); got != "backed up" {
		t.Errorf("kb.db = %q", got)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the replaced database's log stayed beside the restored one: %v", err)
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if read(t, path) != "current" || read(t, path+"-wal") != "current wal" {
		t.Errorf("after undo: kb.db %q, wal %q", read(t, path), read(t, path+"-wal"))
	}
	if left := leftovers(t, filepath.Dir(path)); len(left) != 0 {
		t.Errorf("left in kb/: %v", left)
	}

	// Succeeded: the replaced files go.
	a, path, _ = restoreSetup(t)
	if err := a.in.placeKB(context.Background(), path, self()); err != nil {
		t.Fatal(err)
	}
	for _, f := range a.in.dones {
		f()
	}
	if left := leftovers(t, filepath.Dir(path)); len(left) != 0 {
		t.Errorf("left in kb/ after success: %v", left)
	}
}

// leftovers are the entries of dir other than the database and its log.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "kb.db") {
			out = append(out, e.Name())
		}
	}
	return out
}

// A backup that fails its check is refused before the gateway stops.
func TestPlaceKBRefusesBadBackup(t *testing.T) {
	a, path, backup := restoreSetup(t)
	a.in.o.KB = checkingKB{bad: backup}
	err := a.in.placeKB(context.Background(), path, self())
	if err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("err = %v", err)
	}
	if !a.in.running(a.cur.Gateway.Service) || a.in.gatewayStopped {
		t.Error("the gateway was stopped for a backup that is refused")
	}
	if read(t, path) != "current" {
		t.Error("the database was touched")
	}
}

// After a restore stopped the gateway, the switch starts a new one rather
// than signalling the stopped one.
func TestSwitchToAfterRestoreStartsGateway(t *testing.T) {
	a, path, _ := restoreSetup(t)
	in := a.in
	a.cur.Gateway.KB = path // it served the knowledge base already: only the stop restarts it
	if err := in.placeKB(context.Background(), path, self()); err != nil {
		t.Fatal(err)
	}
	// The gateway comes back on its own addresses, serving the restored
	// knowledge base.
	a.gw.api.Close()
	a.gw.metrics.Close()
	start := a.f.host.onStart
	a.f.host.onStart = func(s service, id proc.Identity) {
		start(s, id)
		if s.Name == "gateway" {
			if !strings.Contains(strings.Join(s.Args, " "), "--kb "+path) {
				t.Errorf("gateway args %q: want --kb %s", s.Args, path)
			}
			startFakeGateway(t, in.l.tlsDir(), in.o.Listen, in.o.MetricsListen)
		}
	}
	st := nextRecord(a, 2)
	if err := in.switchTo(context.Background(), st, manifestOf(t, st.Bundle.Dir), harden.Identities{Gateway: testGW, Runtime: testRT}); err != nil {
		t.Fatal(err)
	}
	if st.Gateway.PID == a.cur.Gateway.PID || !in.running(st.Gateway.Service) || st.Gateway.KB != path {
		t.Errorf("gateway record %+v (kb %q)", st.Gateway.Service, st.Gateway.KB)
	}
	if p := a.f.host.proc(a.cur.Gateway.PID); len(p.signals) != 0 {
		t.Errorf("the stopped gateway was signalled: %v", p.signals)
	}
}
