//go:build unix

package kb

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRootWritesKeepTheOwnersFiles: root ingesting into the gateway's
// database, while the gateway reads it, leaves the -wal and -shm files the
// gateway's, so the gateway can go on reading.
func TestRootWritesKeepTheOwnersFiles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "kb.db")
	k, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	reader, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	k, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	put(t, k, "a.md", "年假制度：员工每年有十天年假。", Public, All)
	for _, suffix := range []string{"-wal", "-shm"} {
		fi, err := os.Stat(path + suffix)
		if err != nil {
			t.Fatalf("%s: %v", suffix, err)
		}
		if s := fi.Sys().(*syscall.Stat_t); s.Uid != 65534 || s.Gid != 65534 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: owner %d:%d mode %04o, want the database's 65534:65534 and 0600", suffix, s.Uid, s.Gid, fi.Mode().Perm())
		}
	}
}
