//go:build linux

package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStoreWithFakeKernel runs the protector logic anywhere: init, wrong and
// right keys, rotation, busy lock and erase, with the ioctls faked.
func TestStoreWithFakeKernel(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel()
	opts := Options{KDF: testKDF, kernel: k, toolMount: fakeToolMount(t)}
	dir := filepath.Join(t.TempDir(), "models")
	me := Owner{UID: os.Getuid(), GID: os.Getgid()}
	keyFile := newKeyFile(t)
	s, recovery, err := Init(ctx, InitOptions{Options: opts, Dir: dir, Owner: me,
		Credentials: []Credential{{KeyFile: keyFile}, {Passphrase: []byte("pw")}}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Meta.Backend != BackendFscrypt || len(s.Meta.Protectors) != 3 {
		t.Fatalf("metadata: %+v", s.Meta)
	}
	if _, _, err := Init(ctx, InitOptions{Options: opts, Dir: dir, Owner: me, Credentials: []Credential{{KeyFile: keyFile}}}); !errors.Is(err, ErrExists) {
		t.Fatalf("second init: %v", err)
	}
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Status(ctx); err != nil || !st.Locked {
		t.Fatalf("status after lock: %+v %v", st, err)
	}
	s, err = Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(ctx, Credential{Passphrase: []byte("nope")}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if err := s.Unlock(ctx, Credential{RecoveryKey: "00-11"}); err == nil || errors.Is(err, ErrWrongKey) {
		t.Fatalf("malformed recovery key: %v", err)
	}
	if err := s.Unlock(ctx, Credential{RecoveryKey: recovery}); err != nil {
		t.Fatal(err)
	}
	// Swapping a wrapped key between protectors must not work (AAD binds it).
	m := *s.Meta
	m.Protectors = append([]Protector(nil), s.Meta.Protectors...)
	m.Protectors[0].WrappedKey, m.Protectors[2].WrappedKey = m.Protectors[2].WrappedKey, m.Protectors[0].WrappedKey
	if _, _, err := m.unwrap(Credential{KeyFile: keyFile}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("swapped wrapped keys: %v", err)
	}
	if err := s.RotateKey(ctx, Credential{Passphrase: []byte("pw")}, Credential{Passphrase: []byte("pw2")}, opts); err != nil {
		t.Fatal(err)
	}
	s, _ = Open(dir, opts)
	if err := s.Unlock(ctx, Credential{Passphrase: []byte("pw")}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old passphrase after rotation: %v", err)
	}
	if err := s.Unlock(ctx, Credential{Passphrase: []byte("pw2")}); err != nil {
		t.Fatal(err)
	}
	k.busy = true
	var be *BusyError
	if err := s.Lock(ctx); !errors.As(err, &be) || !strings.Contains(err.Error(), "still open") {
		t.Fatalf("busy lock: %v", err)
	}
	if _, err := s.Erase(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(MetadataPath(dir)); !os.IsNotExist(err) {
		t.Fatal("metadata survived erase")
	}
}

func TestInitRefusesNonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "x"), nil, 0o600)
	_, _, err := Init(context.Background(), InitOptions{Options: Options{KDF: testKDF, kernel: newFakeKernel(), toolMount: fakeToolMount(t)}, Dir: dir,
		Credentials: []Credential{{Passphrase: []byte("p")}}})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("init into a non-empty directory: %v", err)
	}
}

func TestKeyFileModeRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k")
	os.WriteFile(p, make([]byte, 32), 0o644)
	if _, err := readKeyFile(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("world-readable key file: %v", err)
	}
	os.Chmod(p, 0o600)
	os.WriteFile(p, make([]byte, 8), 0o600)
	if _, err := readKeyFile(p); err == nil || !strings.Contains(err.Error(), "8 bytes") {
		t.Fatalf("short key file: %v", err)
	}
}
