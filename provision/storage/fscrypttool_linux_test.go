//go:build linux

package storage

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/provision/storage/fscryptmeta"
)

// fakeToolMount keeps the fscrypt tool's metadata of fake-kernel stores in
// a temporary directory instead of the root of the real filesystem; like
// fscryptmeta.FindMount it fails for a path that does not exist.
func fakeToolMount(t *testing.T) func(string) (string, error) {
	mnt := t.TempDir()
	return func(path string) (string, error) {
		if path == "" {
			return mnt, nil // the test asking where
		}
		_, err := os.Lstat(path)
		return mnt, err
	}
}

// toolUnwrap opens the fscrypt tool's files as the tool does: the raw key
// unwraps the protector key, which unwraps the policy key.
func toolUnwrap(t *testing.T, d fscryptmeta.Dir, keyID, desc string, raw []byte) ([]byte, error) {
	t.Helper()
	pol, err := d.ReadPolicy(keyID)
	if err != nil {
		return nil, err
	}
	prot, err := d.ReadProtector(desc)
	if err != nil {
		return nil, err
	}
	if prot.Source != fscryptmeta.SourceRawKey || prot.Name != toolProtectorName {
		t.Fatalf("protector = %+v", prot)
	}
	pk, err := fscryptmeta.Unwrap(raw, prot.WrappedKey)
	if err != nil {
		return nil, err
	}
	for _, k := range pol.WrappedKeys {
		if k.ProtectorDescriptor == desc {
			return fscryptmeta.Unwrap(pk, k.WrappedKey)
		}
	}
	return nil, errors.New("the policy does not list the protector")
}

// TestToolMetadataLifecycle checks, without root, what init, rotate-key and
// erase leave in the fscrypt tool's directory: the recovery key (and only
// it) unwraps the master key there; retiring the recovery key or erasing
// the store destroys the files; a protector the operator added stays.
func TestToolMetadataLifecycle(t *testing.T) {
	ctx := context.Background()
	k := newFakeKernel()
	opts := Options{KDF: testKDF, kernel: k, toolMount: fakeToolMount(t)}
	mnt, _ := opts.toolMount("")
	dir := filepath.Join(t.TempDir(), "models")
	me := Owner{UID: os.Getuid(), GID: os.Getgid()}
	keyFile := newKeyFile(t)
	s, recovery, err := Init(ctx, InitOptions{Options: opts, Dir: dir, Owner: me, Credentials: []Credential{{KeyFile: keyFile}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := s.Meta.Protectors[1]
	if rec.Kind != kindRecovery || rec.FscryptProtector == "" || s.Meta.Protectors[0].FscryptProtector != "" {
		t.Fatalf("protectors: %+v", s.Meta.Protectors)
	}
	for path, want := range map[string]fs.FileMode{
		filepath.Join(mnt, ".fscrypt"):                                        fs.ModeDir | 0o755,
		filepath.Join(mnt, ".fscrypt/policies"):                               fs.ModeDir | 0o755,
		filepath.Join(mnt, ".fscrypt/protectors"):                             fs.ModeDir | 0o755,
		filepath.Join(mnt, ".fscrypt/policies", s.Meta.Fscrypt.KeyIdentifier): 0o600,
		filepath.Join(mnt, ".fscrypt/protectors", rec.FscryptProtector):       0o600,
	} {
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want %v", path, fi.Mode(), err, want)
		}
	}
	d, err := fscryptmeta.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := parseRecoveryKey(recovery)
	master, err := toolUnwrap(t, d, s.Meta.Fscrypt.KeyIdentifier, rec.FscryptProtector, raw)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := k.addKey(nil, master); hex.EncodeToString(id[:]) != s.Meta.Fscrypt.KeyIdentifier {
		t.Fatalf("the tool's master key has identifier %x, the store %s", id, s.Meta.Fscrypt.KeyIdentifier)
	}
	wrong := bytes.Clone(raw)
	wrong[31] ^= 1
	if _, err := toolUnwrap(t, d, s.Meta.Fscrypt.KeyIdentifier, rec.FscryptProtector, wrong); !errors.Is(err, fscryptmeta.ErrBadAuth) {
		t.Fatalf("wrong recovery key: %v", err)
	}
	st, err := s.Status(ctx)
	if err != nil || st.FscryptTool != d.PolicyPath(s.Meta.Fscrypt.KeyIdentifier) || st.Protectors[1].FscryptProtector != rec.FscryptProtector {
		t.Fatalf("status: %+v %v", st, err)
	}

	// Rotating the key file leaves the tool's files alone.
	if err := s.RotateKey(ctx, Credential{KeyFile: keyFile}, Credential{Passphrase: []byte("pw")}, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := toolUnwrap(t, d, s.Meta.Fscrypt.KeyIdentifier, rec.FscryptProtector, raw); err != nil {
		t.Fatalf("after rotating the key file: %v", err)
	}

	// An operator's own protector on the same policy survives retiring ours.
	pol, _ := d.ReadPolicy(s.Meta.Fscrypt.KeyIdentifier)
	other := pol.WrappedKeys[0]
	other.ProtectorDescriptor = "00112233445566ff"
	pol.WrappedKeys = append(pol.WrappedKeys, other)
	if err := d.WritePolicy(pol); err != nil {
		t.Fatal(err)
	}
	// Retiring the recovery key retires the tool's protector.
	if err := s.RotateKey(ctx, Credential{RecoveryKey: recovery}, Credential{KeyFile: keyFile}, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(d.ProtectorPath(rec.FscryptProtector)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the retired recovery key's fscrypt protector is still there: %v", err)
	}
	pol, err = d.ReadPolicy(s.Meta.Fscrypt.KeyIdentifier)
	if err != nil || len(pol.WrappedKeys) != 1 || pol.WrappedKeys[0].ProtectorDescriptor != other.ProtectorDescriptor {
		t.Fatalf("policy after retiring the recovery key: %+v %v", pol, err)
	}
	if st, _ := s.Status(ctx); !strings.HasPrefix(st.FscryptTool, "none") {
		t.Fatalf("status after retiring the recovery key: %q", st.FscryptTool)
	}

	// Erase destroys the policy file, whatever it holds.
	if _, err := s.Erase(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(d.PolicyPath(s.Meta.Fscrypt.KeyIdentifier)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("policy file after erase: %v", err)
	}
}

// TestToolMetadataErase checks erase destroys the files init wrote, even
// when the store directory itself is already gone.
func TestToolMetadataErase(t *testing.T) {
	ctx := context.Background()
	opts := Options{KDF: testKDF, kernel: newFakeKernel(), toolMount: fakeToolMount(t)}
	mnt, _ := opts.toolMount("")
	s, _, err := Init(ctx, InitOptions{Options: opts, Dir: filepath.Join(t.TempDir(), "m"), Owner: Owner{UID: os.Getuid(), GID: os.Getgid()},
		Credentials: []Credential{{Passphrase: []byte("p")}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Erase(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"policies", "protectors"} {
		if names, _ := os.ReadDir(filepath.Join(mnt, ".fscrypt", sub)); len(names) != 0 {
			t.Errorf("%s after erase: %v", sub, names)
		}
	}
}

// TestToolMetadataRefusesForeignDir checks init refuses a .fscrypt whose
// directories others control, and leaves nothing behind.
func TestToolMetadataRefusesForeignDir(t *testing.T) {
	for name, setup := range map[string]func(base string){
		"world-writable": func(base string) {
			os.MkdirAll(filepath.Join(base, "policies"), 0o755)
			os.MkdirAll(filepath.Join(base, "protectors"), 0o755)
			os.Chmod(filepath.Join(base, "policies"), 0o777)
		},
		"symlinked": func(base string) {
			os.MkdirAll(filepath.Join(base, "protectors"), 0o755)
			os.Symlink(t.TempDir(), filepath.Join(base, "policies"))
		},
		"half set up": func(base string) {
			os.MkdirAll(filepath.Join(base, "policies"), 0o755)
		},
		"a symlink somebody else owns": func(base string) {
			elsewhere := t.TempDir()
			os.MkdirAll(filepath.Join(elsewhere, "policies"), 0o755)
			os.MkdirAll(filepath.Join(elsewhere, "protectors"), 0o755)
			os.Symlink(elsewhere, base)
			os.Lchown(base, 65534, 65534)
		},
	} {
		t.Run(name, func(t *testing.T) {
			if strings.HasPrefix(name, "a symlink") && os.Geteuid() != 0 {
				t.Skip("needs root to give the symlink to another user")
			}
			opts := Options{KDF: testKDF, kernel: newFakeKernel(), toolMount: fakeToolMount(t)}
			mnt, _ := opts.toolMount("")
			setup(filepath.Join(mnt, ".fscrypt"))
			dir := filepath.Join(t.TempDir(), "m")
			_, _, err := Init(context.Background(), InitOptions{Options: opts, Dir: dir, Owner: Owner{UID: os.Getuid(), GID: os.Getgid()},
				Credentials: []Credential{{Passphrase: []byte("p")}}})
			if err == nil || !strings.Contains(err.Error(), "fscrypt") || !strings.Contains(err.Error(), mnt) {
				t.Fatalf("init: %v", err)
			}
			if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the store directory was left: %v", err)
			}
			if _, err := os.Lstat(MetadataPath(dir)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("the metadata was left: %v", err)
			}
		})
	}
}
