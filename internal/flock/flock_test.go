//go:build linux

package flock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestTryLockAndHolder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	a, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := TryLock(a); err != nil {
		t.Fatal(err)
	}
	b, _ := os.Open(p)
	defer b.Close()
	if err := TryLock(b); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	if pid := Holder(p); pid != os.Getpid() {
		t.Errorf("Holder = %d, want %d", pid, os.Getpid())
	}
	a.Close()
	if err := TryLock(b); err != nil {
		t.Errorf("after release: %v", err)
	}
}

func TestHolderIn(t *testing.T) {
	locks := []byte("1: POSIX  ADVISORY  WRITE 77 08:01:131 0 EOF\n" +
		"2: FLOCK  ADVISORY  WRITE 2917 08:01:131 0 EOF\n" +
		"2: -> FLOCK  ADVISORY  WRITE 3000 08:01:131 0 EOF\n" +
		"3: FLOCK  ADVISORY  WRITE 12 fd:10:131 0 EOF\n" +
		"garbage\n")
	if pid := holderIn(locks, 0x801, 131); pid != 2917 {
		t.Errorf("got %d, want 2917", pid)
	}
	if pid := holderIn(locks, 0x801, 132); pid != 0 {
		t.Errorf("other inode: got %d, want 0", pid)
	}
}
