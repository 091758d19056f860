//go:build linux

package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/storage/fscryptmeta"
	"golang.org/x/sys/unix"
)

// marker is plaintext that must never appear in the raw image.
const marker = "QWEN-APPLIANCE-PLAINTEXT-MARKER"

// makeBundle writes a small signed bundle whose files repeat marker and
// returns its verified manifest and signature.
func makeBundle(t *testing.T, size int) (dir string, m *manifests.Manifest, sig []byte) {
	t.Helper()
	dir = t.TempDir()
	weights := bytes.Repeat([]byte(marker), size/len(marker)+1)[:size]
	files := map[string][]byte{
		"model/weights.gguf":  weights,
		"model/config.json":   []byte(`{"marker":"` + marker + `"}`),
		"model/tokenizer.txt": []byte("tokens " + marker),
		"README":              []byte("readme"),
		"empty":               nil,
	}
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	key, err := manifests.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	m, err = manifests.Create(context.Background(), dir, manifests.CreateOptions{
		Name: "test-model", Version: 1, Created: now, Expires: now.Add(time.Hour), ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Write(dir, m, key); err != nil {
		t.Fatal(err)
	}
	signed, err := manifests.Verifier{Trusted: []manifests.PublicKey{key.Public()}}.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	sig, err = os.ReadFile(filepath.Join(dir, manifests.SignatureFile))
	if err != nil {
		t.Fatal(err)
	}
	return dir, signed.Manifest, sig
}

// treeHashes maps each regular file under dir to its SHA-256.
func treeHashes(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			out[rel] = sha256.Sum256(data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

func TestFscryptLifecycle(t *testing.T) {
	mnt, img := encryptableFS(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "models")
	keyFile := newKeyFile(t)
	opts := Options{KDF: testKDF}

	s, recovery, err := Init(ctx, InitOptions{Options: opts, Dir: dir, Backend: BackendFscrypt,
		Credentials: []Credential{{KeyFile: keyFile}, {Passphrase: []byte("correct horse")}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseRecoveryKey(recovery); err != nil {
		t.Fatalf("recovery key %q: %v", recovery, err)
	}
	fi, err := os.Stat(MetadataPath(dir))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("metadata file: %v, mode %v", err, fi.Mode())
	}

	bundle, m, sig := makeBundle(t, 300<<10)
	if err := CopyIn(ctx, bundle, dir, m, CopyOptions{Signature: sig}); err != nil {
		t.Fatal(err)
	}
	if err := manifests.CheckFiles(ctx, dir, m, manifests.CheckOptions{}); err != nil {
		// Modes differ from the bundle (0400 in the store); only contents count here.
		var fe *manifests.FilesError
		if !errors.As(err, &fe) {
			t.Fatal(err)
		}
		for _, p := range fe.Problems {
			if p.Kind != manifests.ProblemMode {
				t.Errorf("after copy-in: %s", p)
			}
		}
	}
	if err := checkTree(dir, Owner{}, nil); err != nil {
		t.Fatalf("fresh store: %v", err)
	}
	before := treeHashes(t, dir)
	plainNames := names(t, dir)

	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Locked || st.KeyStatus != "present" || st.Cipher != "AES-256-XTS/AES-256-CTS" || st.Mode != "0700" || len(st.Protectors) != 3 {
		t.Fatalf("unlocked status: %+v", st)
	}

	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = s.Status(ctx)
	if err != nil || !st.Locked || st.KeyStatus != "absent" {
		t.Fatalf("locked status: %+v, %v", st, err)
	}
	locked := names(t, dir)
	if len(locked) != len(plainNames) {
		t.Fatalf("locked tree has %d entries, unlocked %d", len(locked), len(plainNames))
	}
	for _, n := range locked {
		for _, p := range plainNames {
			if filepath.Base(n) == filepath.Base(p) {
				t.Errorf("locked store shows plaintext name %q", n)
			}
		}
	}
	for _, n := range locked {
		p := filepath.Join(dir, n)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
			if _, err := os.ReadFile(p); !errors.Is(err, syscall.ENOKEY) {
				t.Errorf("reading %s while locked: %v, want ENOKEY", n, err)
			}
		}
	}
	if imageContains(t, mnt, img, []byte(marker)) {
		t.Fatal("the raw image contains plaintext")
	}
	// Control: the same bytes outside the store are visible in the image.
	control := []byte(marker + "-CONTROL")
	os.WriteFile(filepath.Join(mnt, "plain"), control, 0o600)
	if !imageContains(t, mnt, img, control) {
		t.Fatal("control: plaintext outside the store not found in the image; the scan proves nothing")
	}

	// Wrong keys fail clearly; the store stays locked.
	wrong := newKeyFile(t)
	if err := s.Unlock(ctx, Credential{KeyFile: wrong}); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), wrong) {
		t.Fatalf("unlock with a wrong key file: %v", err)
	}
	if err := s.Unlock(ctx, Credential{Passphrase: []byte("wrong")}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("unlock with a wrong passphrase: %v", err)
	}
	if st, _ := s.Status(ctx); !st.Locked {
		t.Fatal("a wrong key unlocked the store")
	}

	for _, cred := range []Credential{{KeyFile: keyFile}, {Passphrase: []byte("correct horse")}, {RecoveryKey: strings.ToUpper(recovery)}} {
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Unlock(ctx, cred); err != nil {
			t.Fatalf("unlock with %s: %v", cred, err)
		}
		if got := treeHashes(t, dir); !equalHashes(got, before) {
			t.Fatalf("after unlock with %s the files differ", cred)
		}
		if err := s.Lock(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// rotate-key: the old key file stops working, the new one opens the same data.
	var wrappedSeen [][]byte
	for _, p := range s.Meta.Protectors {
		wrappedSeen = append(wrappedSeen, p.WrappedKey)
	}
	newKey := newKeyFile(t)
	if err := s.RotateKey(ctx, Credential{KeyFile: keyFile}, Credential{KeyFile: newKey}, opts); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Meta.Protectors {
		wrappedSeen = append(wrappedSeen, p.WrappedKey)
	}
	s, _ = Open(dir, opts)
	if err := s.Unlock(ctx, Credential{KeyFile: keyFile}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old key after rotation: %v", err)
	}
	if err := s.Unlock(ctx, Credential{KeyFile: newKey}); err != nil {
		t.Fatal(err)
	}
	if got := treeHashes(t, dir); !equalHashes(got, before) {
		t.Fatal("rotation changed the data")
	}
	master, _, err := s.Meta.unwrap(Credential{KeyFile: newKey})
	if err != nil {
		t.Fatal(err)
	}
	// The fscrypt tool's copies of the wrapped keys (binary protobuf) must
	// go with erase too; first make sure they are findable on the image.
	tool, err := fscryptmeta.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := tool.ReadPolicy(s.Meta.Fscrypt.KeyIdentifier)
	if err != nil {
		t.Fatal(err)
	}
	prot, err := tool.ReadProtector(pol.WrappedKeys[0].ProtectorDescriptor)
	if err != nil {
		t.Fatal(err)
	}
	toolWrapped := [][]byte{pol.WrappedKeys[0].WrappedKey.EncryptedKey, prot.WrappedKey.EncryptedKey}
	for _, w := range toolWrapped {
		if !imageContains(t, mnt, img, w) {
			t.Fatal("the fscrypt tool's wrapped key is not on the image before erase")
		}
	}

	// erase: no key, no metadata, no ciphertext, no wrapped key left on disk.
	trimmed, err := s.Erase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, opts); !errors.Is(err, ErrNoStore) {
		t.Fatalf("open after erase: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("store directory after erase: %v", err)
	}
	if imageContains(t, mnt, img, master) {
		t.Fatal("the master key is on disk in the clear")
	}
	if !trimmed {
		t.Fatal("erase did not discard free blocks on a loop device that supports it")
	}
	for _, w := range wrappedSeen {
		if imageContains(t, mnt, img, []byte(base64.StdEncoding.EncodeToString(w))) {
			t.Fatal("a wrapped master key survived erase on the raw image")
		}
	}
	for _, w := range toolWrapped {
		if imageContains(t, mnt, img, w) {
			t.Fatal("a wrapped key of the fscrypt tool's metadata survived erase on the raw image")
		}
	}
	// Even the right key file cannot bring anything back.
	if _, err := Open(dir, opts); err == nil {
		t.Fatal("erased store opened")
	}
}

func equalHashes(a, b map[string][32]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestFscryptLoosePermissionsRefused(t *testing.T) {
	mnt, _ := encryptableFS(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "models")
	keyFile := newKeyFile(t)
	s, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Credentials: []Credential{{KeyFile: keyFile}}})
	if err != nil {
		t.Fatal(err)
	}
	bundle, m, _ := makeBundle(t, 4096)
	if err := CopyIn(ctx, bundle, dir, m, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		path    string
		loosen  func(p string) error
		restore func(p string) error
	}{
		{"world-readable dir", dir, func(p string) error { return os.Chmod(p, 0o755) }, func(p string) error { return os.Chmod(p, 0o700) }},
		{"group-readable file", filepath.Join(dir, manifests.ManifestFile), func(p string) error { return os.Chmod(p, 0o440) }, func(p string) error { return os.Chmod(p, 0o400) }},
		{"other owner", dir, func(p string) error { return os.Chown(p, 1000, 1000) }, func(p string) error { return os.Chown(p, 0, 0) }},
		{"readable metadata", MetadataPath(dir), func(p string) error { return os.Chmod(p, 0o644) }, func(p string) error { return os.Chmod(p, 0o600) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Locked names are ciphertext: find the file by listing.
			p := tc.path
			if filepath.Base(p) == manifests.ManifestFile {
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					if e.Type().IsRegular() {
						p = filepath.Join(dir, e.Name())
					}
				}
			}
			if err := tc.loosen(p); err != nil {
				t.Fatal(err)
			}
			defer tc.restore(p)
			s, err := Open(dir, Options{})
			if err == nil {
				err = s.Unlock(ctx, Credential{KeyFile: keyFile})
			}
			var pe *PermissionError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), p) {
				t.Fatalf("unlock of a loose store: %v (want a permission error naming %s)", err, p)
			}
			if s != nil {
				if st, _ := s.Status(ctx); st != nil && !st.Locked {
					t.Fatal("a loose store was unlocked")
				}
			}
		})
	}
	if err := s.Unlock(ctx, Credential{KeyFile: keyFile}); err != nil {
		t.Fatalf("after restoring the modes: %v", err)
	}
}

func TestFscryptNotSupported(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(base, unix.MNT_DETACH) })
	dir := filepath.Join(base, "models")
	_, _, err := Init(context.Background(), InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Credentials: []Credential{{KeyFile: newKeyFile(t)}}})
	var ne *NotEncryptableError
	if !errors.As(err, &ne) || ne.FSType != "tmpfs" || !strings.Contains(err.Error(), dir) {
		t.Fatalf("init on tmpfs: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatal("a failed init left the directory behind")
	}
	if _, err := os.Stat(MetadataPath(dir)); !os.IsNotExist(err) {
		t.Fatal("a failed init left metadata behind")
	}
}

func TestCopyInRefusesTamperedFile(t *testing.T) {
	mnt, _ := encryptableFS(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "models")
	if _, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Credentials: []Credential{{KeyFile: newKeyFile(t)}}}); err != nil {
		t.Fatal(err)
	}
	bundle, m, _ := makeBundle(t, 200<<10)
	// Flip one byte in the second chunk after signing.
	p := filepath.Join(bundle, "model", "weights.gguf")
	data, _ := os.ReadFile(p)
	data[100<<10] ^= 1
	os.WriteFile(p, data, 0o644)
	err := CopyIn(ctx, bundle, dir, m, CopyOptions{})
	var fe *manifests.FilesError
	if !errors.As(err, &fe) || !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("copy-in of a tampered file: %v", err)
	}
	if len(fe.Problems) != 1 || fe.Problems[0].Path != "model/weights.gguf" || fe.Problems[0].Chunk != 1 {
		t.Fatalf("problems: %+v", fe.Problems)
	}
	if _, err := os.Stat(filepath.Join(dir, "model", "weights.gguf")); !os.IsNotExist(err) {
		t.Fatal("the tampered file was installed")
	}
	if _, err := os.Stat(filepath.Join(dir, manifests.ManifestFile)); !os.IsNotExist(err) {
		t.Fatal("the manifest was written though a file failed")
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "model"))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".partial-") {
			t.Fatalf("left a partial file: %s", e.Name())
		}
	}
}

func TestCopyInLockedStore(t *testing.T) {
	mnt, _ := encryptableFS(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "models")
	s, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Credentials: []Credential{{KeyFile: newKeyFile(t)}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	bundle, m, _ := makeBundle(t, 4096)
	if err := CopyIn(ctx, bundle, dir, m, CopyOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("copy-in into a locked store: %v", err)
	}
}

// TestFscryptBusyLock checks the kernel's semantics for files held open at
// lock time: the key is marked incompletely removed, the open handle still
// reads, and locking again after closing completes.
func TestFscryptBusyLock(t *testing.T) {
	mnt, _ := encryptableFS(t)
	ctx := context.Background()
	dir := filepath.Join(mnt, "models")
	keyFile := newKeyFile(t)
	s, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Credentials: []Credential{{KeyFile: keyFile}}})
	if err != nil {
		t.Fatal(err)
	}
	bundle, m, _ := makeBundle(t, 4096)
	if err := CopyIn(ctx, bundle, dir, m, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "README"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var be *BusyError
	if err := s.Lock(ctx); !errors.As(err, &be) {
		t.Fatalf("lock with an open file: %v", err)
	}
	if st, _ := s.Status(ctx); st.KeyStatus != "incompletely-removed" || !st.Locked {
		t.Fatalf("status with an open file: %+v", st)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "readme" {
		t.Fatalf("the open handle: %q, %v", b, err)
	}
	f.Close()
	if err := s.Lock(ctx); err != nil {
		t.Fatalf("lock after closing: %v", err)
	}
	if st, _ := s.Status(ctx); st.KeyStatus != "absent" {
		t.Fatalf("status after the second lock: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dir, "README")); !os.IsNotExist(err) {
		t.Fatalf("plaintext name after lock: %v", err)
	}
}
