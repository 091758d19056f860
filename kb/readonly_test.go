package kb

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ncruces/go-sqlite3/driver"
)

// snapshot is what OpenReadOnly must leave as it was: every file in the
// database's directory with its bytes and modification time.
type fileState struct {
	data  []byte
	mtime time.Time
}

func dirState(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fileState{}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fileState{b, st.ModTime()}
	}
	return out
}

func sameDir(t *testing.T, dir string, before map[string]fileState) {
	t.Helper()
	after := dirState(t, dir)
	var names []string
	for n := range after {
		names = append(names, n)
	}
	for n := range before {
		if _, ok := after[n]; !ok {
			t.Errorf("%s disappeared", n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		b, ok := before[n]
		if !ok {
			t.Errorf("%s was created", n)
			continue
		}
		if a := after[n]; !bytes.Equal(a.data, b.data) || !a.mtime.Equal(b.mtime) {
			t.Errorf("%s changed (%d -> %d bytes, mtime %v -> %v)", n, len(b.data), len(a.data), b.mtime, a.mtime)
		}
	}
}

func TestOpenReadOnlyLeavesFiles(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "kb")
	p := filepath.Join(dir, "kb.db")
	k, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	put(t, k, "a", "第一份文件。内容甲。", Public, All)
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	before := dirState(t, dir)
	if _, ok := before["kb.db-wal"]; ok {
		t.Fatalf("closed database left a -wal file: %v", before)
	}

	r, err := OpenReadOnly(p)
	if err != nil {
		t.Fatal(err)
	}
	probs, err := r.Check(ctx, CheckOptions{UID: -1})
	if err != nil || len(probs) != 0 {
		t.Fatalf("check: %v, %v", probs, err)
	}
	var n int
	if err := r.db.QueryRow(`SELECT count(*) FROM chunks`).Scan(&n); err != nil || n == 0 {
		t.Fatalf("read chunks: %d, %v", n, err)
	}
	if _, err := r.db.Exec(`DELETE FROM acl`); err == nil {
		t.Error("a read-only database accepted a write")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	sameDir(t, dir, before)
}

// With a writer holding the database open (its -wal and -shm exist), a
// read-only open sees what the writer committed and adds no file.
func TestOpenReadOnlyBesideWriter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kb")
	w, err := Open(filepath.Join(dir, "kb.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	put(t, w, "a", "第一份文件。内容甲。", Public, All)
	before := map[string]bool{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		before[e.Name()] = true
	}
	r, err := OpenReadOnly(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := r.db.QueryRow(`SELECT count(*) FROM documents`).Scan(&n); err != nil || n != 1 {
		t.Errorf("documents seen read-only: %d, %v", n, err)
	}
	r.Close()
	ents, _ = os.ReadDir(dir)
	for _, e := range ents {
		if !before[e.Name()] {
			t.Errorf("%s was created", e.Name())
		}
	}
}

func TestOpenReadOnlyRefuses(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := driver.Open("file:" + foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE t (x); INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 100), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(foreign, filepath.Join(dir, "link.db")); err != nil {
		t.Fatal(err)
	}
	before := dirState(t, dir)
	for _, c := range []struct {
		name  string
		notKB bool
	}{{"empty.db", true}, {"foreign.db", true}, {"garbage.db", true}, {"link.db", false}, {"missing.db", false}} {
		k, err := OpenReadOnly(filepath.Join(dir, c.name))
		if err == nil {
			k.Close()
			t.Errorf("%s: opened", c.name)
			continue
		}
		if got := errors.Is(err, ErrNotKB); got != c.notKB {
			t.Errorf("%s: %v (ErrNotKB %v, want %v)", c.name, err, got, c.notKB)
		}
	}
	sameDir(t, dir, before)
	if st, err := os.Stat(empty); err != nil || st.Size() != 0 {
		t.Errorf("empty file after OpenReadOnly: %v, %v", st, err)
	}
}
