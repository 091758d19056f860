package space

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := Check(filepath.Join(dir, "not", "yet", "there"), 1, "a test"); err != nil {
		t.Fatalf("one byte on an existing filesystem: %v", err)
	}
	err := Check(dir, 1<<62, "the volumes")
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "for the volumes: need 4096.0 PiB") {
		t.Fatalf("got %v", err)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1 << 10: "1.0 KiB", 3 << 29: "1.5 GiB", 1 << 40: "1.0 TiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
