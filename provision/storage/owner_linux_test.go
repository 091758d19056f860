//go:build linux

package storage

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestSetOwner moves a locked fscrypt store from one account to another
// (as install does when the runtime gets a user of its own): every entry
// and the metadata follow, Unlock then accepts the new owner and refuses the
// old one, and a store someone loosened is refused rather than handed on.
func TestSetOwner(t *testing.T) {
	mnt, _ := encryptableFS(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "models")
	keyFile := newKeyFile(t)
	old, next := Owner{UID: 4242, GID: 4242, Name: "qwen-appliance"}, Owner{UID: 4243, GID: 4243, Name: "qwen-runtime"}
	s, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Owner: old, Credentials: []Credential{{KeyFile: keyFile}}})
	if err != nil {
		t.Fatal(err)
	}
	bundle, m, _ := makeBundle(t, 4096)
	if err := CopyIn(ctx, bundle, dir, m, CopyOptions{Owner: old}); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}

	// Loosened: refused, nothing changed.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var pe *PermissionError
	if err := s.SetOwner(next); !errors.As(err, &pe) {
		t.Fatalf("SetOwner of a loose store: %v, want a permission error", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}

	if err := s.SetOwner(next); err != nil {
		t.Fatal(err)
	}
	n := 0
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		fi, _ := d.Info()
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != next.UID || int(st.Gid) != next.GID {
			t.Errorf("%s: owned by %d:%d", p, st.Uid, st.Gid)
		}
		n++
		return nil
	})
	if n < 3 {
		t.Fatalf("only %d entries walked", n)
	}
	again, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Meta.Owner != next {
		t.Fatalf("metadata owner %+v, want %+v", again.Meta.Owner, next)
	}
	if err := again.Unlock(ctx, Credential{KeyFile: keyFile}); err != nil {
		t.Fatalf("unlock after SetOwner: %v", err)
	}
	// The old owner's files would now be refused.
	if err := os.Lchown(filepath.Join(dir, "model"), old.UID, old.GID); err == nil {
		if err := checkTree(dir, again.Meta.Owner, nil); !errors.As(err, &pe) {
			t.Fatalf("a file of the old owner passed: %v", err)
		}
	}
}
