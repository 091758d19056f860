package provision

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// self is an identity whose files this test may own: chown to it works
// unprivileged, as the storage package's own chowns need.
func self() harden.Identity {
	return harden.Identity{User: "self", UID: os.Getuid(), GID: os.Getgid()}
}

// snapshot lists every path under dir with its size and mode, to compare
// a host before a step and after its undo.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == filepath.Join("var", "lib", "qwen-appliance", "install-journal.json"):
			return nil
		case strings.Contains(rel, "/releases/") && strings.Contains(rel, "/state"):
			// The runtime's state directory inside its release (under
			// systemd) goes with the release: copy-in's undo removes a
			// release the attempt made.
			return nil
		}
		out = append(out, rel+" "+fi.Mode().String())
		return nil
	})
	return out
}

// undone runs step on a fresh attempt, fails it, undoes it, and reports
// whether the root is as it was before.
func undone(t *testing.T, in *installer, step func() error) {
	t.Helper()
	// The journal's directory is the lock's, which Install removes itself
	// after a failed first install.
	if err := in.j.begin(); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, in.o.Root)
	if err := step(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, in.o.Root); slices.Equal(before, after) {
		t.Fatal("the step changed nothing: the test proves nothing")
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, in.o.Root); !slices.Equal(before, after) {
		t.Errorf("after undo the root differs:\nbefore %q\nafter  %q", before, after)
	}
}

// Each step of a first install, undone, leaves the root as it found it;
// on an installation, what the installation had stays.
func TestStepUndo(t *testing.T) {
	ctx := context.Background()
	st := func() *state.State { return &state.State{Files: map[string]string{}} }
	exe := func(t *testing.T, in *installer) {
		in.o.Executable = filepath.Join(t.TempDir(), "qwen-appliance")
		os.WriteFile(in.o.Executable, []byte("#!/bin/true\n"), 0o755)
	}
	steps := map[string]func(t *testing.T, f *fakes, in *installer) func() error{
		"trust": func(t *testing.T, f *fakes, in *installer) func() error {
			key := filepath.Join(t.TempDir(), "k.pub")
			os.WriteFile(key, []byte("key"), 0o644)
			in.o.TrustedKeys = []string{key}
			return func() error { return in.trust(st()) }
		},
		"program": func(t *testing.T, f *fakes, in *installer) func() error {
			exe(t, in)
			return func() error { return in.program(st()) }
		},
		"firewall": func(t *testing.T, f *fakes, in *installer) func() error {
			in.o.Netfilter = &fakeNetfilter{}
			in.o.Listen = "127.0.0.1:8443"
			return func() error {
				if err := in.firewall(ctx, st(), harden.Identities{Gateway: testGW, Runtime: testRT}); err != nil {
					return err
				}
				if live, _ := in.o.Netfilter.Live(); live.Table == nil {
					t.Error("no table applied")
				}
				return nil
			}
		},
		"store": func(t *testing.T, f *fakes, in *installer) func() error {
			in.o.Backend = BackendNone
			return func() error { return in.store(ctx, st(), harden.Identities{Gateway: self(), Runtime: self()}) }
		},
		"copy-in": func(t *testing.T, f *fakes, in *installer) func() error {
			key, _ := manifests.GenerateKey(nil)
			src := testRelease(t, filepath.Join(t.TempDir(), "bundle"), 1, key).Dir
			s, err := (manifests.Verifier{Trusted: []manifests.PublicKey{key.Public()}}).Open(src)
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(in.o.Store, 0o700)
			return func() error {
				_, err := in.copyIn(ctx, st(), src, s, nil, self())
				return err
			}
		},
		"upstream": func(t *testing.T, f *fakes, in *installer) func() error {
			os.RemoveAll(in.l.path(ConfigDir))
			return func() error { return in.writeUpstream("http://127.0.0.1:11434", testGW) }
		},
		"store unit": func(t *testing.T, f *fakes, in *installer) func() error {
			return func() error { return in.storeUnit(ctx, st()) }
		},
		"runtime": func(t *testing.T, f *fakes, in *installer) func() error {
			a := &appliance{f: f, in: in}
			a.actLikeServices()
			os.RemoveAll(in.l.path(LogDir))
			m := manifestOf(t, testRelease(t, in.o.Store, 1, mustKey(t)).Dir)
			return func() error {
				s := &state.State{Bundle: state.Bundle{Name: "demo", Version: 1, Dir: release(in.o.Store, "demo", 1)}, Files: map[string]string{}}
				if err := in.runtime(ctx, s, m, testRT); err != nil {
					return err
				}
				if !in.running(s.Runtime) {
					t.Error("the runtime does not run")
				}
				return nil
			}
		},
		"gateway": func(t *testing.T, f *fakes, in *installer) func() error {
			// As the earlier steps leave them: the trusted keys in the
			// configuration directory, the runtime's log beside the
			// gateway's. Each file the step makes must go by itself.
			os.MkdirAll(in.l.path(filepath.Join(ConfigDir, "trusted")), 0o755)
			os.WriteFile(in.l.log("runtime"), []byte("ready\n"), 0o600)
			in.o.Listen, in.o.MetricsListen, in.o.Host = freeAddr(t), freeAddr(t), "localhost"
			serve := func() { startFakeGateway(t, in.l.tlsDir(), in.o.Listen, in.o.MetricsListen) }
			f.host.onStart = func(service, proc.Identity) { serve() }
			f.systemd.onRestart = func(unit string, _ proc.Identity) {
				if unit == harden.GatewayUnit {
					serve()
				}
			}
			return func() error {
				s := st()
				if err := in.gateway(ctx, s, testGW); err != nil {
					return err
				}
				if in.res.AdminToken == "" || !in.running(s.Gateway.Service) {
					t.Error("no admin token, or no gateway running")
				}
				return nil
			}
		},
	}
	for name, prepare := range steps {
		for _, kind := range kinds {
			if kind == SupervisorSystemd && name != "runtime" && name != "gateway" && name != "store unit" {
				continue
			}
			t.Run(name+"/"+kind, func(t *testing.T) {
				f := newFakes()
				in, _ := fakeInstaller(t, f, kind)
				in.o.Backend = BackendNone
				if kind == SupervisorSystemd {
					in.o.Backend = "fscrypt"
				}
				step := prepare(t, f, in)
				undone(t, in, step)
				if live := f.host.live(); len(live) != 0 {
					t.Errorf("running after undo: %v", live)
				}
				if active := f.systemd.activeUnits(); len(active) != 0 {
					t.Errorf("units active after undo: %v", active)
				}
				if nf, ok := in.o.Netfilter.(*fakeNetfilter); ok && nf.table != nil {
					t.Error("the firewall table a first install applied survived its undo")
				}
			})
		}
	}
}

func mustKey(t *testing.T) manifests.PrivateKey {
	t.Helper()
	k, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// On an installation, a failed upgrade's undo keeps what was there: the
// program copy, the firewall table (Apply's own restore is the only way
// back), the store and the release being served.
func TestStepUndoKeepsTheInstallation(t *testing.T) {
	ctx := context.Background()
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	in.o.Backend, in.o.Listen = BackendNone, "127.0.0.1:8443"
	in.o.Executable = filepath.Join(t.TempDir(), "qwen-appliance")
	os.WriteFile(in.o.Executable, []byte("#!/bin/true\n"), 0o755)
	nf := &fakeNetfilter{}
	in.o.Netfilter = nf
	key := mustKey(t)
	src := testRelease(t, filepath.Join(t.TempDir(), "bundle"), 1, key).Dir
	s, err := (manifests.Verifier{Trusted: []manifests.PublicKey{key.Public()}}).Open(src)
	if err != nil {
		t.Fatal(err)
	}
	var served string
	ids := harden.Identities{Gateway: self(), Runtime: self()}
	st := &state.State{Files: map[string]string{}}
	// The installation as a first install left it.
	for _, step := range []func() error{
		func() error { return in.program(st) },
		func() error { return in.firewall(ctx, st, ids) },
		func() error { return in.store(ctx, st, ids) },
		func() (err error) { served, err = in.copyIn(ctx, st, src, s, nil, self()); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	in.undos, in.fresh = nil, nil
	in.prev = &state.State{Bundle: state.Bundle{Dir: served}}
	table := nf.table

	before := snapshot(t, in.o.Root)
	// The served release damaged: copy-in copies it again.
	weights := filepath.Join(served, "model", "weights.gguf")
	os.Chmod(weights, 0o600)
	os.WriteFile(weights, []byte("rot"), 0o600)
	in.o.ClientCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, step := range []func() error{
		func() error { return in.program(st) },
		func() error { return in.firewall(ctx, st, ids) },
		func() error { return in.store(ctx, st, ids) },
		func() error { _, err := in.copyIn(ctx, st, src, s, nil, self()); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if nf.table == table {
		t.Fatal("the changed setting did not re-apply the firewall")
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if nf.table == nil {
		t.Error("an upgrade's undo removed the installation's firewall table")
	}
	after := snapshot(t, in.o.Root)
	for _, p := range before {
		if !slices.Contains(after, p) && !strings.Contains(p, "weights.gguf") {
			t.Errorf("%s: gone after the upgrade's undo", p)
		}
	}
}

// The first admin token is journaled before it is saved and revoked by the
// undo (its secret was never shown); an installation that has an active
// admin token gets none.
func TestAdminTokenUndo(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	if err := in.j.begin(); err != nil {
		t.Fatal(err)
	}
	if err := in.adminToken(testGW); err != nil {
		t.Fatal(err)
	}
	if in.res.AdminToken == "" {
		t.Fatal("no admin token made")
	}
	j := readJournal(t, in)
	s, _ := tokens.Load(in.l.tokens())
	if len(s.Tokens) != 1 || s.Tokens[0].ID != j.AdminToken {
		t.Fatalf("journal names %q, token file has %+v", j.AdminToken, s.Tokens)
	}
	if got := f.host.owners[in.l.tokens()]; got != [2]int{testGW.UID, testGW.GID} {
		t.Errorf("token file given to %v", got)
	}
	if fi, _ := os.Stat(in.l.tokens()); fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v", fi.Mode())
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	s, _ = tokens.Load(in.l.tokens())
	if s.Tokens[0].State(time.Now()) != "revoked" {
		t.Errorf("the undone attempt's admin token is %s", s.Tokens[0].State(time.Now()))
	}

	// An installation with an active admin token: none is made.
	s.Create(tokens.CreateOptions{Name: "ops", Role: tokens.RoleAdmin})
	s.Save(in.l.tokens())
	in.res.AdminToken, in.undos = "", nil
	if err := in.adminToken(testGW); err != nil {
		t.Fatal(err)
	}
	if s, _ := tokens.Load(in.l.tokens()); in.res.AdminToken != "" || len(s.Tokens) != 2 || len(in.undos) != 0 {
		t.Errorf("an installation with an admin token got another (%d tokens, %d undos)", len(s.Tokens), len(in.undos))
	}
}

// The store's unlock unit is removed by the undo only when this attempt
// wrote it first: an installation's stays, rewritten.
func TestStoreUnitUndo(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorSystemd)
	path := in.l.path(filepath.Join(harden.UnitDir, harden.StoreUnit))
	os.WriteFile(path, []byte("[Unit]\n# old\n"), 0o644)
	st := &state.State{Files: map[string]string{}}
	if err := in.storeUnit(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	if st.Store.Unit != path || st.Files[path] == "" {
		t.Errorf("store unit recorded as %q (%q)", st.Store.Unit, st.Files[path])
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if text, err := os.ReadFile(path); err != nil || strings.Contains(string(text), "# old") {
		t.Errorf("the installation's store unit: %v, rewritten: %v", err, !strings.Contains(string(text), "# old"))
	}
	if !f.systemd.units[harden.StoreUnit].enabled {
		t.Error("the store unit is not enabled")
	}
	if _, err := os.Stat(in.j.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("journal: %v", err)
	}
}

// Secret files go to the gateway's user alone, mode 0600, whatever they
// were; a missing one is left for the gateway step to make.
func TestProtectSecrets(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	if err := certs.Init(certs.Options{Dir: in.l.tlsDir(), Hosts: []string{"localhost"}}); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(in.l.tlsDir(), certs.KeyFile)
	os.Chmod(key, 0o644)
	if err := in.protectSecrets(testGW); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 || f.host.owners[key] != [2]int{testGW.UID, testGW.GID} {
		t.Errorf("server key mode %v owner %v", fi.Mode().Perm(), f.host.owners[key])
	}
	if _, ok := f.host.owners[in.l.tokens()]; ok {
		t.Error("a missing token file was given an owner")
	}
}

// Repair gives every path of the store's releases back to the runtime's
// user alone: group and other bits go, each path's owner is set (never
// through a symlink), and a symlink planted there is refused.
func TestPrivateReleasesRepair(t *testing.T) {
	f := newFakes()
	in, _ := fakeInstaller(t, f, SupervisorProcess)
	rel := testRelease(t, in.o.Store, 1, mustKey(t)).Dir
	weights := filepath.Join(rel, "model", "weights.gguf")
	err := in.privateReleases(testRT, false)
	if err == nil || !strings.Contains(err.Error(), "the runtime's uid 1002") {
		t.Fatalf("check = %v, want the drift named", err)
	}
	if len(f.host.owners) != 0 {
		t.Fatal("a check changed owners")
	}
	if err := in.privateReleases(testRT, true); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(weights); fi.Mode().Perm() != 0o600 {
		t.Errorf("weights mode %v after repair", fi.Mode().Perm())
	}
	if got := f.host.owners[weights]; got != [2]int{testRT.UID, testRT.GID} {
		t.Errorf("weights given to %v", got)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(rel, "model", "link")); err != nil {
		t.Fatal(err)
	}
	for _, fix := range []bool{false, true} {
		if err := in.privateReleases(testRT, fix); err == nil || !strings.Contains(err.Error(), "install never makes there") {
			t.Errorf("fix=%v with a symlink: %v", fix, err)
		}
	}
}
