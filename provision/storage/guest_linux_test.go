//go:build linux

package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestGuest gives a real fscrypt store a guest (the gateway's knowledge
// base): the root becomes 0710 with the guest's group, the guest's
// directory 0700 its own, and Unlock accepts that layout, locked (ciphertext
// names) and unlocked, and refuses each loosening of it.
func TestGuest(t *testing.T) {
	mnt, _ := encryptableFS(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "store")
	keyFile := newKeyFile(t)
	rt, gw := Owner{UID: 4243, GID: 4243, Name: "qwen-runtime"}, Owner{UID: 4242, GID: 4242, Name: "qwen-appliance"}
	s, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Owner: rt, Credentials: []Credential{{KeyFile: keyFile}}})
	if err != nil {
		t.Fatal(err)
	}
	bundle, m, _ := makeBundle(t, 4096)
	if err := os.Mkdir(filepath.Join(dir, "rel"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "rel"), rt.UID, rt.GID); err != nil {
		t.Fatal(err)
	}
	if err := CopyIn(ctx, bundle, filepath.Join(dir, "rel"), m, CopyOptions{Owner: rt}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*Guest{{Dir: "a/b", Owner: gw}, {Dir: "kb", Owner: Owner{}}, {Dir: "kb", Owner: rt}} {
		if err := s.SetGuest(bad); err == nil {
			t.Errorf("SetGuest(%+v) accepted", bad)
		}
	}
	g := &Guest{Dir: "kb", Owner: gw}
	if err := s.SetGuest(g); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, "kb", "kb.db")
	if err := os.WriteFile(db, []byte("sqlite"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(db, gw.UID, gw.GID); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != GuestRootMode {
		t.Fatalf("root mode %04o, want %04o", fi.Mode().Perm(), GuestRootMode)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Meta.Guest == nil || *s.Meta.Guest != *g {
		t.Fatalf("metadata guest %+v, want %+v", s.Meta.Guest, g)
	}
	if err := s.checkPermissions(); err != nil {
		t.Fatalf("the guest layout, unlocked: %v", err)
	}
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, Credential{KeyFile: keyFile}); err != nil {
		t.Fatalf("unlock the guest layout from locked: %v", err)
	}

	// Each loosening fails, and putting it back passes again.
	cases := []struct {
		name        string
		break_, fix func() error
	}{
		{"root 0711", func() error { return os.Chmod(dir, 0o711) }, func() error { return os.Chmod(dir, GuestRootMode) }},
		{"root 0750", func() error { return os.Chmod(dir, 0o750) }, func() error { return os.Chmod(dir, GuestRootMode) }},
		{"root 0710, another group", func() error { return os.Chown(dir, rt.UID, 4244) }, func() error { return os.Chown(dir, rt.UID, gw.GID) }},
		{"guest dir 0750", func() error { return os.Chmod(filepath.Join(dir, "kb"), 0o750) }, func() error { return os.Chmod(filepath.Join(dir, "kb"), 0o700) }},
		{"kb.db 0640", func() error { return os.Chmod(db, 0o640) }, func() error { return os.Chmod(db, 0o600) }},
		{"kb.db the runtime's", func() error { return os.Chown(db, rt.UID, rt.GID) }, func() error { return os.Chown(db, gw.UID, gw.GID) }},
		{"a release file the guest's", func() error { return os.Chown(filepath.Join(dir, "rel", "model"), gw.UID, gw.GID) },
			func() error { return os.Chown(filepath.Join(dir, "rel", "model"), rt.UID, rt.GID) }},
		{"a second guest directory", func() error {
			if err := os.Mkdir(filepath.Join(dir, "more"), 0o700); err != nil {
				return err
			}
			return os.Chown(filepath.Join(dir, "more"), gw.UID, gw.GID)
		}, func() error { return os.Remove(filepath.Join(dir, "more")) }},
	}
	var pe *PermissionError
	for _, c := range cases {
		if err := c.break_(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := s.checkPermissions(); !errors.As(err, &pe) {
			t.Errorf("%s: passed (%v), want a permission error", c.name, err)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
		if err := c.fix(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := s.checkPermissions(); err != nil {
			t.Fatalf("%s put back: %v", c.name, err)
		}
	}
	// Without the guest recorded, the same tree is refused: the metadata,
	// root's alone, is what admits it.
	if err := checkTree(dir, rt, nil); !errors.As(err, &pe) {
		t.Fatalf("the guest layout without a recorded guest passed: %v", err)
	}
	// SetOwner hands the store on, leaving the guest's directory alone.
	next := Owner{UID: 4245, GID: 4245, Name: "qwen-runtime2"}
	if err := s.SetOwner(next); err != nil {
		t.Fatal(err)
	}
	if err := s.checkPermissions(); err != nil {
		t.Fatalf("after SetOwner: %v", err)
	}
}
