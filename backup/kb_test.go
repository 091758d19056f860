package backup

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
)

// The knowledge base's snapshot travels as KBMember; verify runs CheckKB
// on the extracted copy and refuses the archive (ErrVerification) when the
// check fails, and says so when there is nothing to check it with.
func TestVerifyChecksKB(t *testing.T) {
	h := newHost(t)
	snap := []byte("SQLite format 3\x00 a snapshot")
	file, m := h.create(t, Options{Extra: []Extra{{Name: KBExtra, Open: func(context.Context) (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(snap)), int64(len(snap)), nil
	}}}})
	found := false
	for _, mb := range m.Members {
		found = found || (mb.Name == KBMember && mb.Kind == KindExtra)
	}
	if !found {
		t.Fatalf("no %s member", KBMember)
	}
	verify := func(check func(context.Context, string) error) (*Report, error) {
		return Verify(ctx, VerifyOptions{File: file, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()}, CheckKB: check})
	}
	var seen []byte
	rep, err := verify(func(_ context.Context, p string) error {
		seen, _ = os.ReadFile(p)
		return nil
	})
	if err != nil || rep.KB != "integrity and content hashes ok" || !bytes.Equal(seen, snap) {
		t.Fatalf("a good snapshot: %v, %q, checked %q", err, rep.KB, seen)
	}
	if _, err := verify(func(context.Context, string) error { return errors.New("database disk image is malformed") }); !errors.Is(err, ErrVerification) {
		t.Fatalf("a damaged snapshot: %v, want ErrVerification", err)
	}
	if rep, err := verify(nil); err != nil || rep.KB != "not checked" {
		t.Fatalf("no checker: %v, %q", err, rep.KB)
	}
	// An archive without a knowledge base: nothing to check, nothing said.
	plain, _ := h.create(t, Options{Out: filepath.Join(t.TempDir(), "plain.age")})
	rep, err = Verify(ctx, VerifyOptions{File: plain, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()},
		CheckKB: func(context.Context, string) error { return errors.New("called") }})
	if err != nil || rep.KB != "" {
		t.Fatalf("no snapshot: %v, %q", err, rep.KB)
	}
}

type kbChecker func(context.Context, string) error

func (c kbChecker) Create(context.Context, string) error { return nil }
func (c kbChecker) Ingest(context.Context, string, provision.KBIngest) (int, error) {
	return 0, nil
}
func (c kbChecker) Check(ctx context.Context, p string) error { return c(ctx, p) }

// Restore checks the knowledge base's snapshot before it changes anything,
// and hands the checked copy to install (KBRestore).
func TestRestoreKB(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (useradd --prefix for the service user)")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("needs useradd")
	}
	h := newHost(t)
	snap := []byte("SQLite format 3\x00 a snapshot")
	file, _ := h.create(t, Options{Extra: []Extra{{Name: KBExtra, Open: func(context.Context) (io.ReadCloser, int64, error) {
		return io.NopCloser(bytes.NewReader(snap)), int64(len(snap)), nil
	}}}})
	must(t, h.log.Close())
	for _, d := range []string{provision.ConfigDir, provision.LogDir, provision.StateDir} {
		must(t, os.RemoveAll(filepath.Join(h.root, d)))
	}
	var placed []byte
	o := RestoreOptions{File: file, Identities: []age.Identity{h.id}, Trusted: []manifests.PublicKey{h.signer.Public()},
		Bundle: h.bundle, Root: h.root, install: func(_ context.Context, o provision.Options) (*provision.Result, error) {
			placed, _ = os.ReadFile(o.KBRestore)
			return nil, errors.New("stop here")
		}}
	o.Install.KB = kbChecker(func(context.Context, string) error { return errors.New("database disk image is malformed") })
	if _, err := Restore(ctx, o); !errors.Is(err, ErrVerification) {
		t.Fatalf("a damaged snapshot: %v, want ErrVerification", err)
	}
	if _, err := os.Lstat(filepath.Join(h.root, provision.ConfigDir)); err == nil {
		t.Fatal("a refused restore placed the configuration")
	}
	o.Install.KB = kbChecker(func(context.Context, string) error { return nil })
	if _, err := Restore(ctx, o); err == nil {
		t.Fatal("the stub install did not run")
	}
	if !bytes.Equal(placed, snap) {
		t.Fatalf("install got %q as KBRestore, want the snapshot", placed)
	}
}
