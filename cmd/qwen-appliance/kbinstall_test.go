package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/ncruces/go-sqlite3/driver"

	"github.com/qwen-appliance/qwen-appliance/backup"
	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// The knowledge base install makes is the one the kb CLI and verify name.
func TestKBPathAgrees(t *testing.T) {
	if a, b := provision.KBPath("/s"), kb.StorePath("/s"); a != b {
		t.Fatalf("provision.KBPath %s, kb.StorePath %s", a, b)
	}
	if backup.KBMember != "extra/"+backup.KBExtra {
		t.Fatal(backup.KBMember)
	}
}

func writeDocs(t *testing.T, dir string, docs map[string]string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for n, text := range docs {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte(text))
		sums[p] = hex.EncodeToString(s[:])
	}
	return sums
}

func search(t *testing.T, path, query string, as ...string) []kb.Hit {
	t.Helper()
	k, err := kb.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	ps, err := kb.ParsePrincipals(as...)
	if err != nil {
		t.Fatal(err)
	}
	hits, err := k.Search(context.Background(), kb.Query{Text: query, Caller: kb.Caller{Principals: ps, Clearance: kb.Secret}})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// Install's ingest checks every file before it writes one: a file that
// does not hash to its signed SHA-256, or cannot be extracted, leaves the
// knowledge base without a single new document.
func TestInstallKBIngestAllOrNothing(t *testing.T) {
	ctx := context.Background()
	dir, docs := t.TempDir(), t.TempDir()
	path := filepath.Join(dir, "kb", "kb.db")
	var k installKB
	if err := k.Create(ctx, path); err != nil {
		t.Fatal(err)
	}
	sums := writeDocs(t, docs, map[string]string{"a-leave.md": "# Leave\n\nAnnual leave is 25 days.\n", "b-pay.md": "# Pay\n\nSalaries are paid monthly.\n"})
	in := provision.KBIngest{Paths: []string{docs}, Expect: sums, Allow: []string{"role:hr"}, Class: "internal"}

	// One file changed after signing: refused as a verification error.
	tampered := map[string]string{}
	for p, s := range sums {
		tampered[p] = s
	}
	tampered[filepath.Join(docs, "b-pay.md")] = hex.EncodeToString(make([]byte, 32))
	bad := in
	bad.Expect = tampered
	if _, err := k.Ingest(ctx, path, bad); !errors.Is(err, manifests.ErrVerification) {
		t.Fatalf("a file that is not the signed one: %v, want a verification error", err)
	}
	if hits := search(t, path, "leave", "role:hr"); len(hits) != 0 {
		t.Fatalf("a refused ingest stored %d chunks", len(hits))
	}
	// A file that cannot be extracted: refused, nothing stored.
	if err := os.WriteFile(filepath.Join(docs, "c.bin"), []byte{0, 1, 2}, 0o644); err != nil {
		t.Fatal(err)
	}
	unsigned := in
	unsigned.Expect = nil
	if _, err := k.Ingest(ctx, path, unsigned); !errors.Is(err, kb.ErrUnknownType) {
		t.Fatalf("an unknown file: %v", err)
	}
	if hits := search(t, path, "leave", "role:hr"); len(hits) != 0 {
		t.Fatalf("a refused ingest stored %d chunks", len(hits))
	}
	os.Remove(filepath.Join(docs, "c.bin"))

	n, err := k.Ingest(ctx, path, in)
	if err != nil || n != 2 {
		t.Fatalf("ingest: %d documents, %v", n, err)
	}
	if hits := search(t, path, "leave", "role:hr"); len(hits) == 0 {
		t.Fatal("hr finds nothing")
	}
	if hits := search(t, path, "leave", "role:user"); len(hits) != 0 {
		t.Fatalf("a role not on the access list finds %d chunks", len(hits))
	}
}

// The backup's snapshot is taken while a writer holds the database, and
// writes nothing beside it; it passes the integrity and content checks,
// finds the same document for the same role only, and a snapshot whose
// chunk was edited, or whose pages were damaged, fails them.
func TestKBSnapshotAndCheck(t *testing.T) {
	ctx := context.Background()
	store, docs := t.TempDir(), t.TempDir()
	path := filepath.Join(store, "kb", "kb.db")
	writeDocs(t, docs, map[string]string{"leave.md": "# Leave\n\nAnnual leave is 25 days for every employee.\n"})
	var ik installKB
	if err := ik.Create(ctx, path); err != nil {
		t.Fatal(err)
	}
	if _, err := ik.Ingest(ctx, path, provision.KBIngest{Paths: []string{docs}, Allow: []string{"role:hr"}, Class: "internal"}); err != nil {
		t.Fatal(err)
	}
	// A writer (the gateway) holds it open meanwhile.
	live, err := kb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	before, _ := os.ReadDir(filepath.Dir(path))
	r, size, err := kbSnapshot(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "kb.db")
	f, err := os.Create(snap)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, r)
	if err != nil || n != size {
		t.Fatalf("copied %d of %d: %v", n, size, err)
	}
	r.Close()
	f.Close()
	after, _ := os.ReadDir(filepath.Dir(path))
	if len(after) != len(before) {
		t.Fatalf("the snapshot left entries in the kb/ directory: %v, before %v", after, before)
	}
	if err := checkKBFile(ctx, snap); err != nil {
		t.Fatalf("a good snapshot: %v", err)
	}
	if hits := search(t, snap, "annual leave", "role:hr"); len(hits) == 0 || hits[0].Title != "Leave" {
		t.Fatalf("the snapshot finds %v for hr", hits)
	}
	if hits := search(t, snap, "annual leave", "role:user"); len(hits) != 0 {
		t.Fatal("the snapshot widened the access list")
	}

	// A chunk edited behind ingest's back.
	edited := filepath.Join(t.TempDir(), "kb.db")
	copyFile(t, snap, edited)
	db, err := sql.Open("sqlite3", "file:"+edited)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE chunks SET text = 'Annual leave is 40 days.'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := checkKBFile(ctx, edited); !errors.Is(err, kb.ErrDamaged) {
		t.Fatalf("an edited chunk: %v, want ErrDamaged", err)
	}
	// Damaged pages: SQLite's integrity check, or opening it, fails.
	damaged := filepath.Join(t.TempDir(), "kb.db")
	copyFile(t, snap, damaged)
	data, _ := os.ReadFile(damaged)
	for i := 4096 + 100; i < len(data) && i < 4096*3; i++ {
		data[i] ^= 0x5a
	}
	os.WriteFile(damaged, data, 0o600)
	if err := checkKBFile(ctx, damaged); err == nil {
		t.Fatal("a damaged snapshot passed")
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A backup of an installation whose gateway serves a knowledge base that
// cannot be read (a locked store) fails instead of leaving it out; one
// installed before the knowledge base existed has none to add.
func TestKBBackupExtra(t *testing.T) {
	root := t.TempDir()
	store := filepath.Join(root, "store")
	st := &state.State{Store: state.Store{Dir: store}}
	if err := state.Save(root, st); err != nil {
		t.Fatal(err)
	}
	if x := kbBackupExtra(root); x != nil {
		t.Fatalf("no knowledge base served: %v", x)
	}
	st.Gateway.KB = provision.KBPath(store)
	if err := state.Save(root, st); err != nil {
		t.Fatal(err)
	}
	x := kbBackupExtra(root)
	if len(x) != 1 {
		t.Fatalf("extras %v", x)
	}
	if _, _, err := x[0].Open(context.Background()); err == nil || !strings.Contains(err.Error(), "store locked") {
		t.Fatalf("an unreadable knowledge base: %v", err)
	}
	var ik installKB
	if err := ik.Create(context.Background(), st.Gateway.KB); err != nil {
		t.Fatal(err)
	}
	r, size, err := kbBackupExtra(root)[0].Open(context.Background())
	if err != nil || size == 0 {
		t.Fatalf("snapshot: %d bytes, %v", size, err)
	}
	r.Close()
}
