package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFileReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if err := WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(path, []byte("new contents"), 0o640); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "new contents" {
		t.Fatalf("read %q, %v", data, err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o640 {
		t.Errorf("mode %04o, want 0640", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestWriteFileFailureLeavesOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory in the way of the rename: the write fails after the
	// temporary file exists.
	blocked := filepath.Join(dir, "d")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(blocked, []byte("new"), 0o600); err == nil {
		t.Fatal("rename onto a non-empty directory succeeded")
	}
	if data, _ := os.ReadFile(path); string(data) != "old" {
		t.Errorf("old file now %q", data)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("temporary file left behind after a failure: %v", entries)
	}
}

func TestStartWritebackHarmless(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "wb")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(make([]byte, 1<<16))
	StartWriteback(f, 0, 1<<16)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestShred(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := os.WriteFile(p, []byte("secret key material"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := Shred(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("shredded file still there: %v", err)
	}
	if err := Shred(p); err != nil {
		t.Fatalf("a missing file: %v", err)
	}
	if err := Shred(link); err == nil {
		t.Fatal("a symlink was followed")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("the symlink's target was overwritten: %q", b)
	}
}

// TestReplaceFileKeepsOwner: root replacing a service's file leaves it the
// service's; WriteFile makes it root's.
func TestReplaceFileKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	p := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	owner := func() (uint32, uint32) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	if err := ReplaceFile(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(); u != 65534 || g != 65534 {
		t.Errorf("ReplaceFile: owner %d:%d, want 65534:65534", u, g)
	}
	if err := WriteFile(p, []byte("newer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, g := owner(); u != 0 || g != 0 {
		t.Errorf("WriteFile: owner %d:%d, want 0:0", u, g)
	}
	// A new file: nothing to keep.
	q := filepath.Join(filepath.Dir(p), "fresh")
	if err := ReplaceFile(q, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The version WriteFileShredding replaces is overwritten: a second link to
// the old inode (standing in for the free blocks it leaves) reads junk.
func TestWriteFileShreddingOverwritesOld(t *testing.T) {
	dir := t.TempDir()
	p, peek := filepath.Join(dir, "meta"), filepath.Join(dir, "peek")
	old := []byte(`{"wrappedKey":"OLD-SECRET"}`)
	if err := WriteFile(p, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p, peek); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileShredding(p, []byte(`{"wrappedKey":"NEW"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != `{"wrappedKey":"NEW"}` {
		t.Fatalf("new content %q", got)
	}
	left, err := os.ReadFile(peek)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != len(old) || bytes.Contains(left, []byte("OLD-SECRET")) {
		t.Fatalf("the replaced version still reads %q", left)
	}
	// A first write has nothing to overwrite.
	if err := WriteFileShredding(filepath.Join(dir, "fresh"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
}
