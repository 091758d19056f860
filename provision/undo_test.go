package provision

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRemoveIfNew checks the undo a step registers before it creates
// paths: what did not exist goes, from its topmost missing directory; what
// existed stays.
func TestRemoveIfNew(t *testing.T) {
	root := t.TempDir()
	keep := filepath.Join(root, "etc", "kept")
	if err := os.MkdirAll(filepath.Dir(keep), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := &installer{}
	made := filepath.Join(root, "etc", "qwen-appliance", "trusted", "key-0.pub")
	in.removeIfNew(keep, made, filepath.Join(root, "etc", "qwen-appliance", "tls"))
	if got := len(in.undos); got != 1 {
		t.Fatalf("%d undos registered, want 1 (etc/qwen-appliance once, nothing for what exists)", got)
	}
	if err := os.MkdirAll(filepath.Dir(made), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(made, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	in.j = &journal{path: filepath.Join(root, "journal.json")}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "qwen-appliance")); !os.IsNotExist(err) {
		t.Errorf("etc/qwen-appliance after undo: %v, want it gone", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("a file that existed before: %v", err)
	}
	if got := newTop(keep); got != "" {
		t.Errorf("newTop(existing) = %q", got)
	}
	if got, want := newTop(filepath.Join(root, "a", "b", "c")), filepath.Join(root, "a"); got != want {
		t.Errorf("newTop = %q, want %q", got, want)
	}
}
