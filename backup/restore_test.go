package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// The restore test runs the real useradd --prefix; install itself is
// replaced by a stub that records its options (the sandbox script runs the
// real one).
func TestRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (useradd --prefix for the service user)")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("needs useradd")
	}
	h := newHost(t)
	file, m := h.create(t, Options{})
	tokensBefore, err := os.ReadFile(filepath.Join(h.root, provision.ConfigDir, "tokens.json"))
	must(t, err)
	must(t, h.log.Close())

	var got []provision.Options
	fail := true
	stub := func(_ context.Context, o provision.Options) (*provision.Result, error) {
		got = append(got, o)
		if fail {
			return nil, errors.New("killed")
		}
		must(t, state.Save(o.Root, &state.State{Root: o.Root}))
		return &provision.Result{}, nil
	}
	o := RestoreOptions{File: file, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()},
		Bundle: h.bundle, Root: h.root, install: stub}

	// Over a working installation: refused, nothing changed.
	if _, err := Restore(ctx, o); !errors.Is(err, ErrInstalled) {
		t.Fatalf("restore over an installation: %v", err)
	}
	// Wipe the host as uninstall does.
	for _, d := range []string{provision.ConfigDir, provision.LogDir, provision.StateDir} {
		must(t, os.RemoveAll(filepath.Join(h.root, d)))
	}
	// A bundle older than the backup's: refused before any change.
	o.Bundle = h.bundleV1
	if _, err := Restore(ctx, o); !errors.Is(err, ErrNewerBackup) || !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("older bundle: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.root, provision.ConfigDir)); err == nil {
		t.Fatal("a refused restore wrote the configuration")
	}
	o.Bundle = h.bundle
	// Install fails (killed) after the files are back; the re-run converges.
	if _, err := Restore(ctx, o); err == nil {
		t.Fatal("restore with a failing install succeeded")
	}
	// A killed run leaves its staging copy; the next one removes it.
	must(t, os.Mkdir(filepath.Join(h.root, "var/lib", stagePrefix+"killed"), 0o700))
	fail = false
	res, err := Restore(ctx, o)
	must(t, err)
	if len(got) != 2 {
		t.Fatalf("install ran %d times", len(got))
	}
	io := got[1]
	if io.Listen != "127.0.0.1:18443" || io.Host != "qwen.local" || len(io.ClientCIDRs) != 1 || io.Store != h.store || io.Backend != "none" {
		t.Errorf("install options lack the backed-up settings: %+v", io)
	}
	if len(io.TrustedKeys) != 1 || filepath.Base(io.TrustedKeys[0]) != "key-0.pub" {
		t.Errorf("trusted keys %v", io.TrustedKeys)
	}
	tokensAfter, err := os.ReadFile(filepath.Join(h.root, provision.ConfigDir, "tokens.json"))
	must(t, err)
	if !bytes.Equal(tokensBefore, tokensAfter) {
		t.Error("tokens.json differs after restore")
	}
	if _, err := os.Stat(filepath.Join(h.root, provision.StateDir, markerFile)); err == nil {
		t.Error("restore marker left behind")
	}
	if left, _ := filepath.Glob(filepath.Join(h.root, "var/lib", stagePrefix+"*")); len(left) > 0 {
		t.Errorf("staging copies left behind: %v", left)
	}
	// The chain continues: verified with the audit key across the restore,
	// with exactly one restore record naming the backup after the head.
	paths, _ := audit.Files(filepath.Join(h.root, provision.LogDir, "audit.log"))
	rep, err := audit.Verify(paths, audit.VerifyOptions{Trusted: []manifests.PublicKey{h.auditKey.Public()}})
	must(t, err)
	if rep.LastSeq <= m.AuditHead.Seq {
		t.Errorf("log ends at %d, backup head %d", rep.LastSeq, m.AuditHead.Seq)
	}
	data, _ := os.ReadFile(paths[len(paths)-1])
	if n := bytes.Count(data, []byte(`"kind":"restore"`)); n != 1 {
		t.Errorf("%d restore records, want 1", n)
	}
	if !bytes.Contains(data, []byte(res.Backup)) {
		t.Errorf("no restore record naming %s", res.Backup)
	}
}

// A disk that fills up while restore stages the archive leaves the new
// host without configuration, state or staging files.
func TestRestoreDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	h := newHost(t)
	file, _ := h.create(t, Options{IncludeModel: true})
	root := t.TempDir()
	mountTmpfs(t, root, "48k")
	_, err := Restore(ctx, RestoreOptions{File: file, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()},
		Bundle: h.bundle, Root: root, install: func(context.Context, provision.Options) (*provision.Result, error) {
			t.Fatal("install ran")
			return nil, nil
		}})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("restore onto a full disk: %v", err)
	}
	var left []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// Without --bundle, a backup made with --include-model installs the signed
// bundle it holds; one made without is refused before anything changes.
func TestRestoreBackedUpBundle(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (useradd --prefix for the service user)")
	}
	h := newHost(t)
	thin, _ := h.create(t, Options{})
	full, _ := h.create(t, Options{IncludeModel: true})
	must(t, h.log.Close())
	for _, d := range []string{provision.ConfigDir, provision.LogDir, provision.StateDir} {
		must(t, os.RemoveAll(filepath.Join(h.root, d)))
	}
	var bundle string
	stub := func(_ context.Context, o provision.Options) (*provision.Result, error) {
		bundle = o.Bundle
		// What install verifies: the staged copy is a complete signed bundle.
		k, err := manifests.LoadPublicKeys(o.TrustedKeys...)
		must(t, err)
		s, err := manifests.Verifier{Trusted: k}.Open(o.Bundle)
		must(t, err)
		must(t, manifests.CheckFiles(context.Background(), o.Bundle, s.Manifest, manifests.CheckOptions{}))
		return &provision.Result{}, nil
	}
	o := RestoreOptions{File: thin, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()}, Root: h.root, install: stub}
	if _, err := Restore(ctx, o); !errors.Is(err, ErrNoBundle) {
		t.Fatalf("no bundle, thin backup: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.root, provision.ConfigDir)); err == nil {
		t.Fatal("a refused restore wrote the configuration")
	}
	o.File = full
	_, err := Restore(ctx, o)
	must(t, err)
	if bundle == "" || filepath.Base(bundle) != "bundle" {
		t.Errorf("install got bundle %q", bundle)
	}
	if _, err := os.Stat(bundle); err == nil {
		t.Error("the staged bundle outlived the restore")
	}
}
