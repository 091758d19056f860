package provision

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
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

// TestSaveStateUndo checks that a failure after the state step puts back
// the record the attempt replaced, or removes the one a first install made.
func TestSaveStateUndo(t *testing.T) {
	root := t.TempDir()
	in := &installer{l: layout{root: harden.Root(root)}, j: &journal{path: filepath.Join(root, "journal.json")}}
	if err := in.saveState(&state.State{Root: root, Bundle: state.Bundle{Name: "demo", Version: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(state.Path(root)); !os.IsNotExist(err) {
		t.Fatalf("first install's state after undo: %v, want none", err)
	}

	if err := state.Save(root, &state.State{Root: root, Bundle: state.Bundle{Name: "demo", Version: 1}}); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(state.Path(root))
	in.undos = nil
	if err := in.saveState(&state.State{Root: root, Bundle: state.Bundle{Name: "demo", Version: 2}}); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(state.Path(root)); string(after) == string(before) {
		t.Fatal("saveState did not write the new record")
	}
	if err := in.undo(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(state.Path(root)); string(after) != string(before) {
		t.Fatalf("state after undo:\n%s\nwant the upgrade's previous record:\n%s", after, before)
	}
}
