package verify

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/ncruces/go-sqlite3/driver"

	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// kbFixture makes a store holding a knowledge base of two documents, owned
// by the test's own uid (recorded as the service user's), and a Target
// pointing at it.
func kbFixture(t *testing.T) (*Target, string) {
	t.Helper()
	store := filepath.Join(t.TempDir(), "store")
	must(t, os.Mkdir(store, 0o700))
	p := kb.StorePath(store)
	k, err := kb.Open(p)
	must(t, err)
	for _, d := range []struct{ src, text string }{
		{"薪酬制度.md", "经理的年终奖金为三个月工资。"},
		{"年假制度.md", "员工每年享有十天带薪年假。"},
	} {
		_, err := k.Put(context.Background(), kb.Document{Title: d.src, Source: d.src, Format: "markdown",
			Class: kb.Internal, Allow: []kb.Principal{"role:hr"}, Raw: []byte(d.text),
			Sections: []kb.Section{{Text: d.text}}}, kb.ChunkOptions{})
		must(t, err)
	}
	must(t, k.Close())
	tg := &Target{State: &state.State{Store: state.Store{Dir: store, Backend: "fscrypt"},
		ServiceUser: "qwen-appliance", ServiceUID: os.Getuid()}}
	return tg, p
}

// kbExec changes the database behind kb's back, as an intruder would.
func kbExec(t *testing.T, p, query string) {
	t.Helper()
	db, err := driver.Open("file:" + p)
	must(t, err)
	defer db.Close()
	res, err := db.Exec(query)
	must(t, err)
	if n, _ := res.RowsAffected(); n == 0 {
		t.Fatalf("%s changed nothing", query)
	}
}

var kbChecks = []string{"kb.acl", "kb.permissions", "kb.location", "kb.content"}

func TestKBChecksPass(t *testing.T) {
	tg, p := kbFixture(t)
	for _, id := range kbChecks {
		expect(t, runOne(t, id, tg), Pass, p)
	}
}

func TestKBChecksNotApplicable(t *testing.T) {
	for _, tg := range []*Target{{}, {State: &state.State{}}, {State: &state.State{Store: state.Store{Dir: t.TempDir()}}}} {
		for _, id := range kbChecks {
			expect(t, runOne(t, id, tg), NotApplicable, "")
		}
	}
}

func TestKBACLRemoved(t *testing.T) {
	tg, p := kbFixture(t)
	kbExec(t, p, `DELETE FROM acl WHERE doc = 2`)
	expect(t, runOne(t, "kb.acl", tg), Fail, "document 2 has no access list")
	expect(t, runOne(t, "kb.content", tg), Pass, "")
}

func TestKBMode(t *testing.T) {
	tg, p := kbFixture(t)
	must(t, os.Chmod(p, 0o644))
	expect(t, runOne(t, "kb.permissions", tg), Fail, "mode 0644")
	must(t, os.Chmod(p, 0o600))
	must(t, os.Chmod(filepath.Dir(p), 0o755))
	expect(t, runOne(t, "kb.permissions", tg), Fail, "mode 0755")
	must(t, os.Chmod(filepath.Dir(p), 0o700))
	expect(t, runOne(t, "kb.permissions", tg), Pass, "")

	// Owned by someone other than the service user.
	tg.State.ServiceUID = os.Getuid() + 1
	expect(t, runOne(t, "kb.permissions", tg), Fail, "want")
}

func TestKBOutsideStore(t *testing.T) {
	tg, p := kbFixture(t)
	// The kb/ directory moved to another disk and linked back: the path
	// is the default one, the bytes are not in the store.
	outside := filepath.Join(t.TempDir(), "elsewhere")
	must(t, os.Rename(filepath.Dir(p), outside))
	must(t, os.Symlink(outside, filepath.Dir(p)))
	expect(t, runOne(t, "kb.location", tg), Fail, "outside the encrypted store")
	expect(t, runOne(t, "kb.permissions", tg), Fail, "symbolic link")
}

func TestKBTampered(t *testing.T) {
	tg, p := kbFixture(t)
	kbExec(t, p, `UPDATE chunks SET text = '经理的年终奖金为十二个月工资。' WHERE doc = 1`)
	expect(t, runOne(t, "kb.content", tg), Fail, "document 1: stored chunks hash")

	tg, p = kbFixture(t)
	kbExec(t, p, `UPDATE documents SET content = 'ab' WHERE id = 2`)
	expect(t, runOne(t, "kb.content", tg), Fail, "document 2")
	expect(t, runOne(t, "kb.acl", tg), Pass, "")
}

func TestKBUnreadable(t *testing.T) {
	tg, p := kbFixture(t)
	must(t, os.WriteFile(p, []byte("not a database, longer than a header would be........................................................................................"), 0o600))
	for _, f := range []string{"-wal", "-shm"} {
		os.Remove(p + f)
	}
	expect(t, runOne(t, "kb.content", tg), Error, "")
}

// The kb/ directory belongs to the gateway's user; the store's own check
// leaves it to kb.permissions, and still catches a stray file beside it.
func TestStorePermissionsLeavesKB(t *testing.T) {
	tg, _ := kbFixture(t)
	if os.Getuid() != 0 {
		t.Skip("needs root to give the kb/ directory another owner")
	}
	tg.State.RuntimeUser, tg.State.RuntimeUID = "qwen-runtime", 4242
	must(t, os.Chown(tg.State.Store.Dir, 4242, 4242))
	expect(t, runOne(t, "storage.permissions", tg), Pass, "private")
	expect(t, runOne(t, "kb.permissions", tg), Pass, "")
	must(t, os.WriteFile(filepath.Join(tg.State.Store.Dir, "stray.db"), nil, 0o600))
	expect(t, runOne(t, "storage.permissions", tg), Fail, "stray.db")
}

// verify never changes the host: the kb checks leave the database's
// bytes, modification time and directory (no new -wal/-shm) as they were.
func TestKBChecksReadOnly(t *testing.T) {
	tg, p := kbFixture(t)
	dir := filepath.Dir(p)
	type file struct {
		data  string
		mtime int64
	}
	list := func() map[string]file {
		ents, err := os.ReadDir(dir)
		must(t, err)
		out := map[string]file{}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			must(t, err)
			st, err := os.Stat(filepath.Join(dir, e.Name()))
			must(t, err)
			out[e.Name()] = file{string(b), st.ModTime().UnixNano()}
		}
		return out
	}
	before := list()
	for _, id := range kbChecks {
		expect(t, runOne(t, id, tg), Pass, p)
	}
	after := list()
	if len(after) != len(before) {
		t.Errorf("directory %s: %d files before, %d after", dir, len(before), len(after))
	}
	for n, a := range after {
		if b, ok := before[n]; !ok {
			t.Errorf("verify created %s", n)
		} else if a != b {
			t.Errorf("verify changed %s", n)
		}
	}

	// An empty file is not a knowledge base: the check errors, and no
	// schema is written into it.
	must(t, os.WriteFile(p, nil, 0o600))
	expect(t, runOne(t, "kb.content", tg), Error, "not a knowledge-base database")
	if st, err := os.Stat(p); err != nil || st.Size() != 0 {
		t.Errorf("empty database after verify: %v, %v", st, err)
	}
	if _, err := os.Lstat(p + "-wal"); err == nil {
		t.Error("verify created a -wal file beside the empty database")
	}
}

// The layout install makes: the store's root the runtime's with the
// gateway's group, mode 0710; kb/ the gateway's, 0700, its files 0600.
// storage.permissions and the kb checks pass it, and each loosening (or a
// path given to the wrong user) fails storage.permissions.
func TestStoreLayoutWithKB(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the store to two users")
	}
	tg, p := kbFixture(t)
	const rt, gw = 4243, 4242
	tg.State.RuntimeUser, tg.State.RuntimeUID, tg.State.RuntimeGID = "qwen-runtime", rt, rt
	tg.State.ServiceUID, tg.State.ServiceGID = gw, gw
	store, kbDir := tg.State.Store.Dir, filepath.Dir(p)
	rel := filepath.Join(store, "releases")
	must(t, os.Mkdir(rel, 0o700))
	must(t, os.WriteFile(filepath.Join(rel, "model"), []byte("w"), 0o400))
	must(t, os.Chown(rel, rt, rt))
	must(t, os.Chown(filepath.Join(rel, "model"), rt, rt))
	must(t, os.Chown(store, rt, gw))
	must(t, os.Chmod(store, 0o710))
	entries, err := os.ReadDir(kbDir)
	must(t, err)
	must(t, os.Chown(kbDir, gw, gw))
	for _, e := range entries {
		must(t, os.Chown(filepath.Join(kbDir, e.Name()), gw, gw))
	}
	expect(t, runOne(t, "storage.permissions", tg), Pass, "private")
	for _, id := range kbChecks {
		expect(t, runOne(t, id, tg), Pass, "")
	}
	cases := []struct {
		name, want  string
		break_, fix func() error
	}{
		{"root 0711", "0711 lets group or others in", func() error { return os.Chmod(store, 0o711) }, func() error { return os.Chmod(store, 0o710) }},
		{"root 0750", "0750 lets group or others in", func() error { return os.Chmod(store, 0o750) }, func() error { return os.Chmod(store, 0o710) }},
		{"root 0710 another group", "0710 lets group", func() error { return os.Chown(store, rt, 4244) }, func() error { return os.Chown(store, rt, gw) }},
		{"root the gateway's", "owned by uid 4242", func() error { return os.Chown(store, gw, gw) }, func() error { return os.Chown(store, rt, gw) }},
		{"kb/ 0750", "0750", func() error { return os.Chmod(kbDir, 0o750) }, func() error { return os.Chmod(kbDir, 0o700) }},
		{"kb/ the runtime's", "the gateway's user", func() error { return os.Chown(kbDir, rt, rt) }, func() error { return os.Chown(kbDir, gw, gw) }},
		{"kb.db 0640", "kb.db: mode 0640", func() error { return os.Chmod(p, 0o640) }, func() error { return os.Chmod(p, 0o600) }},
		{"kb.db root's", "kb.db: owned by uid 0", func() error { return os.Chown(p, 0, 0) }, func() error { return os.Chown(p, gw, gw) }},
		{"a release file the gateway's", "model: owned by uid 4242", func() error { return os.Chown(filepath.Join(rel, "model"), gw, gw) },
			func() error { return os.Chown(filepath.Join(rel, "model"), rt, rt) }},
		{"kb/ a symlink", "is a symlink", func() error {
			if err := os.Rename(kbDir, kbDir+".real"); err != nil {
				return err
			}
			return os.Symlink(kbDir+".real", kbDir)
		}, func() error {
			if err := os.Remove(kbDir); err != nil {
				return err
			}
			return os.Rename(kbDir+".real", kbDir)
		}},
	}
	for _, c := range cases {
		must(t, c.break_())
		expect(t, runOne(t, "storage.permissions", tg), Fail, c.want)
		must(t, c.fix())
		expect(t, runOne(t, "storage.permissions", tg), Pass, "private")
	}
}
