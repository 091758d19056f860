//go:build linux

package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func requireCryptsetup(t *testing.T) {
	t.Helper()
	requireRoot(t)
	requireTools(t, "cryptsetup")
}

// TestLUKSVolume formats a file-backed volume and checks the header, key
// slots and key tests; opening and mounting need device-mapper, which is
// tested when the kernel has it.
func TestLUKSVolume(t *testing.T) {
	requireCryptsetup(t)
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "models")
	volume := filepath.Join(base, "models.luks")
	keyFile := newKeyFile(t)
	cs := execCryptsetup{}
	opts := Options{KDF: KDF{Time: 4, MemoryKiB: 32, Threads: 1}}

	s, recovery, err := Init(ctx, InitOptions{Options: opts, Dir: dir, Backend: BackendLUKS, Volume: volume, VolumeSize: 40 << 20,
		Credentials: []Credential{{KeyFile: keyFile}, {Passphrase: []byte("correct horse")}}})
	dmErr := haveDeviceMapper()
	if dmErr != nil {
		if !errors.Is(err, ErrNoDeviceMapper) || !strings.Contains(err.Error(), "formatted "+volume) {
			t.Fatalf("init without device-mapper: %v", err)
		}
		if s, err = Open(dir, opts); err != nil {
			t.Fatal(err)
		}
		t.Logf("no device-mapper here: open/mkfs/mount not exercised (%v)", dmErr)
	} else if err != nil {
		t.Fatal(err)
	} else {
		t.Cleanup(func() { s.Lock(context.Background()) })
	}
	if fi, err := os.Stat(volume); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("volume file: %v", err)
	}

	h, err := readHeader(ctx, cs, volume)
	if err != nil {
		t.Fatal(err)
	}
	if h.Cipher != "aes-xts-plain64" || h.KeyBits != 512 || len(h.KeySlots) != 3 {
		t.Fatalf("header: %+v", h)
	}
	for _, ks := range h.KeySlots {
		if ks.PBKDF != "argon2id" || ks.KeyBits != 512 || ks.Time != 4 || ks.MemoryKiB != 32 {
			t.Fatalf("key slot: %+v", ks)
		}
	}
	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Backend != BackendLUKS || st.Cipher != "aes-xts-plain64" || st.KeyBits != 512 || len(st.KeySlots) != 3 || (dmErr != nil && !st.Locked) {
		t.Fatalf("status: %+v", st)
	}

	key, _ := os.ReadFile(keyFile)
	for i, cred := range []Credential{{KeyFile: keyFile}, {Passphrase: []byte("correct horse")}, {RecoveryKey: recovery}} {
		secret, err := luksSecret(cred)
		if err != nil {
			t.Fatal(err)
		}
		if err := testKey(ctx, cs, volume, secret, i); err != nil {
			t.Fatalf("%s in slot %d: %v", cred, i, err)
		}
	}
	if err := testKey(ctx, cs, volume, []byte("wrong"), -1); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if dmErr != nil {
		if err := s.Unlock(ctx, Credential{Passphrase: []byte("wrong")}); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("unlock with a wrong passphrase: %v", err)
		}
		if err := s.Unlock(ctx, Credential{KeyFile: keyFile}); !errors.Is(err, ErrNoDeviceMapper) {
			t.Fatalf("unlock without device-mapper: %v", err)
		}
	}

	// Add and remove a key slot by hand.
	extra := []byte("an extra passphrase")
	if err := addKeySlot(ctx, cs, volume, key, extra, 7, opts.KDF); err != nil {
		t.Fatal(err)
	}
	if err := testKey(ctx, cs, volume, extra, 7); err != nil {
		t.Fatal(err)
	}
	if err := removeLUKSKey(ctx, cs, volume, extra); err != nil {
		t.Fatal(err)
	}
	if err := testKey(ctx, cs, volume, extra, -1); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("removed key still opens: %v", err)
	}

	// rotate-key swaps the passphrase's slot for a new key file.
	newKey := newKeyFile(t)
	if err := s.RotateKey(ctx, Credential{Passphrase: []byte("correct horse")}, Credential{KeyFile: newKey}, opts); err != nil {
		t.Fatal(err)
	}
	if err := testKey(ctx, cs, volume, []byte("correct horse"), -1); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("rotated passphrase still opens: %v", err)
	}
	nk, _ := os.ReadFile(newKey)
	if err := testKey(ctx, cs, volume, nk, -1); err != nil {
		t.Fatal(err)
	}
	h, _ = readHeader(ctx, cs, volume)
	var slots []int
	for _, ks := range h.KeySlots {
		slots = append(slots, ks.Slot)
	}
	if !slices.Equal(slots, []int{0, 2, 3}) {
		t.Fatalf("slots after rotation: %v", slots)
	}

	// erase wipes every key slot.
	if _, err := s.Erase(ctx); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{key, nk, []byte(recovery)} {
		if err := testKey(ctx, cs, volume, k, -1); err == nil {
			t.Fatal("a key opens the erased volume")
		}
	}
	if _, err := Open(dir, opts); !errors.Is(err, ErrNoStore) {
		t.Fatalf("open after erase: %v", err)
	}
}

func TestLUKSRefusesExistingHeader(t *testing.T) {
	requireCryptsetup(t)
	ctx := context.Background()
	base := t.TempDir()
	volume := filepath.Join(base, "v.luks")
	if err := createVolumeFile(volume, 32<<20); err != nil {
		t.Fatal(err)
	}
	if err := formatVolume(ctx, execCryptsetup{}, volume, "other", []byte("someone else's key"), testKDF); err != nil {
		t.Fatal(err)
	}
	_, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: filepath.Join(base, "m"), Backend: BackendLUKS, Volume: volume,
		Credentials: []Credential{{Passphrase: []byte("x")}}})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("init over a LUKS volume: %v", err)
	}
}

// TestLUKSCommandLines checks what is asked of cryptsetup, without it.
func TestLUKSCommandLines(t *testing.T) {
	fake := &fakeCryptsetup{}
	ctx := context.Background()
	if err := formatVolume(ctx, fake, "/dev/sdz", "qwen-x", []byte("k"), KDF{Time: 4, MemoryKiB: 1 << 20, Threads: 4}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(fake.Calls[0], " ")
	for _, want := range []string{"luksFormat", "--type luks2", "--cipher aes-xts-plain64", "--key-size 512", "--pbkdf argon2id",
		"--pbkdf-memory 1048576", "--pbkdf-force-iterations 4", "--key-file /dev/fd/3 /dev/sdz"} {
		if !strings.Contains(got, want) {
			t.Errorf("luksFormat args %q lack %q", got, want)
		}
	}
	if string(fake.Secrets[0][0]) != "k" || strings.Contains(got, " k ") {
		t.Error("the key must travel through /dev/fd/3, not the command line")
	}
	fake.Reply = func(args []string, _ [][]byte) ([]byte, error) {
		return nil, &cryptsetupError{Args: args, Code: 2, Stderr: "No key available with this passphrase."}
	}
	if err := testKey(ctx, fake, "/dev/sdz", []byte("bad"), -1); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("exit status 2: %v", err)
	}
}

// TestLUKSOpenMount runs the whole LUKS path (open, mkfs, mount, write,
// lock, unlock) where the kernel has device-mapper.
func TestLUKSOpenMount(t *testing.T) {
	requireCryptsetup(t)
	requireTools(t, "mkfs.ext4")
	if err := haveDeviceMapper(); err != nil {
		t.Skipf("cannot open a LUKS volume on this kernel: %v", err)
	}
	ctx := context.Background()
	base := t.TempDir()
	dir := filepath.Join(base, "models")
	keyFile := newKeyFile(t)
	s, _, err := Init(ctx, InitOptions{Options: Options{KDF: testKDF}, Dir: dir, Backend: BackendLUKS,
		Volume: filepath.Join(base, "v.luks"), VolumeSize: 64 << 20, Credentials: []Credential{{KeyFile: keyFile}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Lock(context.Background()) })
	bundle, m, _ := makeBundle(t, 64<<10)
	if err := CopyIn(ctx, bundle, dir, m, CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	before := treeHashes(t, dir)
	if err := s.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Status(ctx); !st.Locked {
		t.Fatal("still open after lock")
	}
	if err := s.Unlock(ctx, Credential{KeyFile: keyFile}); err != nil {
		t.Fatal(err)
	}
	if !equalHashes(treeHashes(t, dir), before) {
		t.Fatal("files differ after unlock")
	}
}
