//go:build linux

package provision

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// testInstaller is an installer for a sandbox root, as newInstaller makes
// it, without a bundle.
func testInstaller(t *testing.T) (*installer, *bytes.Buffer) {
	t.Helper()
	root := t.TempDir()
	var log bytes.Buffer
	in := &installer{o: Options{Root: root, Now: time.Now}, l: layout{root: harden.Root(root)}, log: &log}
	in.j = &journal{path: in.l.journal()}
	in.sys = realSystem()
	in.sups = newSupervisors(in.sys, in.l)
	return in, &log
}

// sleeper starts a process that stands for one a crashed install left, or
// for a stranger that now holds its PID.
func sleeper(t *testing.T) (*exec.Cmd, proc.Identity, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	id, err := proc.Identify(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, id, done
}

func writeJournal(t *testing.T, in *installer, j journal) {
	t.Helper()
	j.path = in.j.path
	if err := j.save(); err != nil {
		t.Fatal(err)
	}
}

func gone(done <-chan struct{}, within time.Duration) bool {
	select {
	case <-done:
		return true
	case <-time.After(within):
		return false
	}
}

// Case 5 of issue 21: after a power loss, recovery killed whatever process
// held a PID the crashed install recorded. Only a process whose start time
// and boot still match is ours.
func TestRecoverSignalsOnlyOwnProcesses(t *testing.T) {
	in, log := testInstaller(t)
	_, stranger, strangerDone := sleeper(t)
	_, legacy, legacyDone := sleeper(t)
	_, ours, oursDone := sleeper(t)
	reused := stranger
	reused.Start-- // recorded for an earlier process with the same PID
	writeJournal(t, in, journal{Procs: []proc.Identity{reused, ours}, PIDs: []int{legacy.PID}, At: time.Now()})

	if err := in.recover(); err != nil {
		t.Fatal(err)
	}
	if !gone(oursDone, 5*time.Second) {
		t.Error("the crashed attempt's own process was not stopped")
	}
	if gone(strangerDone, 300*time.Millisecond) {
		t.Error("a process that reused a recorded PID was killed")
	}
	if gone(legacyDone, 0) {
		t.Error("a PID recorded without identity was killed")
	}
	for _, want := range []string{"not stopping pid", "is not the process recorded", "stopping pid"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(in.j.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal left behind: %v", err)
	}
}

// Uninstall stops the recorded services only while their identity matches.
func TestUninstallSparesReusedPID(t *testing.T) {
	in, _ := testInstaller(t)
	root := string(in.l.root)
	_, stranger, strangerDone := sleeper(t)
	_, ours, oursDone := sleeper(t)
	st := &state.State{Root: root,
		Runtime: state.Service{Name: "runtime", PID: stranger.PID, Start: stranger.Start + 1, Boot: stranger.Boot},
		Gateway: state.Gateway{Service: state.Service{Name: "gateway", PID: ours.PID, Start: ours.Start, Boot: ours.Boot}}}
	if err := state.Save(root, st); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	err := Uninstall(context.Background(), UninstallOptions{Root: root, Netfilter: noTable{},
		Log: func(f string, a ...any) { log.WriteString(fmt.Sprintf(f, a...) + "\n") }})
	if err != nil {
		t.Fatal(err)
	}
	if !gone(oursDone, 5*time.Second) {
		t.Error("uninstall did not stop its own gateway")
	}
	if gone(strangerDone, 300*time.Millisecond) {
		t.Error("uninstall killed a process that reused the runtime's PID")
	}
	if !strings.Contains(log.String(), "not signalled") {
		t.Errorf("uninstall did not say it left pid %d alone:\n%s", stranger.PID, log.String())
	}
	if _, err := os.Stat(in.l.path(StateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory (and its lock) left behind: %v", err)
	}
}

// Case 7 of issue 21: a crash after the gateway step left a valid admin
// token whose secret nobody saw. The next run revokes it.
func TestRecoverRevokesUnshownAdminToken(t *testing.T) {
	in, log := testInstaller(t)
	path := in.l.tokens()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	s, _ := tokens.Load(path)
	_, shown, _ := s.Create(tokens.CreateOptions{Name: "ops", Role: tokens.RoleAdmin})
	_, unshown, _ := s.Create(tokens.CreateOptions{Name: "install-admin", Role: tokens.RoleAdmin})
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	writeJournal(t, in, journal{AdminToken: unshown.ID, At: time.Now()})
	if err := in.recover(); err != nil {
		t.Fatal(err)
	}
	s, err := tokens.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, tok := range s.Tokens {
		states[tok.ID] = tok.State(time.Now())
	}
	if states[unshown.ID] != "revoked" || states[shown.ID] != "active" {
		t.Errorf("token states %v: want %s revoked and %s active", states, unshown.ID, shown.ID)
	}
	if !strings.Contains(log.String(), "never shown") {
		t.Errorf("log:\n%s", log)
	}
	// A journal naming a token that was never saved (the crash came
	// between the journal and the token file) is not an error.
	writeJournal(t, in, journal{AdminToken: "tok_neverSaved", At: time.Now()})
	if err := in.recover(); err != nil {
		t.Fatal(err)
	}
}

// Case 12 of issue 21: install, rollback and uninstall hold one lock; a
// second run fails at once, naming the holder.
func TestLockRefusesASecondRun(t *testing.T) {
	in, _ := testInstaller(t)
	root := string(in.l.root)
	lk, err := in.l.lock()
	if err != nil {
		t.Fatal(err)
	}
	if err := state.Save(root, &state.State{Root: root, TrustedKeys: []string{"/nonexistent.pub"}, Previous: &state.Bundle{Dir: "/nonexistent"}}); err != nil {
		t.Fatal(err)
	}
	pid := "pid " + strconv.Itoa(os.Getpid())
	for name, run := range map[string]func() error{
		"install": func() error {
			_, err := Install(context.Background(), Options{Root: root, Bundle: "/nonexistent", TrustedKeys: []string{"/nonexistent.pub"}, Supervisor: SupervisorProcess, Executable: "/bin/true"})
			return err
		},
		"rollback": func() error {
			_, err := Rollback(context.Background(), RollbackOptions{Root: root})
			return err
		},
		"uninstall": func() error {
			return Uninstall(context.Background(), UninstallOptions{Root: root, Netfilter: noTable{}})
		},
	} {
		err := run()
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), pid) {
			t.Errorf("%s while locked: %v, want ErrBusy naming %s", name, err, pid)
		}
	}
	if _, err := os.Stat(state.Path(root)); err != nil {
		t.Errorf("the state was touched while another run held the lock: %v", err)
	}
	lk.release()
	// Released (as when the holder exits): the next run gets past the lock.
	_, err = Install(context.Background(), Options{Root: root, Bundle: "/nonexistent", TrustedKeys: []string{"/nonexistent.pub"}, Supervisor: SupervisorProcess, Executable: "/bin/true"})
	if errors.Is(err, ErrBusy) {
		t.Errorf("install after release: %v", err)
	}
}

// Case 6 of issue 21: plaintext staging copies a killed install left, in
// the places older versions used, are removed by the next run.
func TestRemoveLeftovers(t *testing.T) {
	in, _ := testInstaller(t)
	in.o.Store = in.l.path(StoreDir)
	dir := in.l.path(StateDir)
	var left []string
	for _, p := range []string{"incoming/model/w.gguf", ".incoming.unpack-123/model/w.gguf", ".incoming.rebuild-9/v.tar", "store/.staging/bundle/model/w.gguf"} {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("weights"), 0o600); err != nil {
			t.Fatal(err)
		}
		left = append(left, p)
	}
	keep := filepath.Join(dir, "state.json")
	os.WriteFile(keep, []byte("{}"), 0o600)
	in.removeLeftovers()
	for _, p := range left {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived: %v", p, err)
		}
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("removed more than staging: %v", err)
	}
}

// noTable is a kernel without our nftables table.
type noTable struct{}

func (noTable) Live() (harden.State, error)         { return harden.State{}, nil }
func (noTable) Replace(uint32, *harden.Table) error { return nil }

var _ harden.Netfilter = noTable{}
