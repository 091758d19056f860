//go:build linux

package storage

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testKDF is the cheapest argon2id cost, so tests stay fast.
var testKDF = KDF{Time: 1, MemoryKiB: 64, Threads: 1}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mounts, fscrypt key ioctls)")
	}
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian: e2fsprogs, util-linux, cryptsetup-bin)", tool)
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// encryptableFS mounts a fresh 64 MiB ext4 image made with the encrypt
// feature on a loop device and returns the mount point and the image path.
// It is unmounted and detached when the test ends, even on failure.
func encryptableFS(t *testing.T) (mnt, img string) {
	t.Helper()
	requireRoot(t)
	requireTools(t, "mkfs.ext4", "losetup")
	dir := t.TempDir()
	img = filepath.Join(dir, "fs.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "mkfs.ext4", "-q", "-O", "encrypt", "-E", "nodiscard", img)
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	mnt = filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt, img
}

// imageContains reports whether the raw image holds needle, after the
// filesystem's dirty data reached it.
func imageContains(t *testing.T, mnt, img string, needle []byte) bool {
	t.Helper()
	d, err := os.Open(mnt)
	if err != nil {
		t.Fatal(err)
	}
	unix.Syncfs(int(d.Fd()))
	d.Close()
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(data, needle)
}

func newKeyFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "store.key")
	if err := NewKeyFile(p); err != nil {
		t.Fatal(err)
	}
	return p
}
