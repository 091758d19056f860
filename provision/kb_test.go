package provision

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

const testMeta = `{"model": {"name": "Qwen/Qwen2.5-7B-Instruct", "layers": 28, "kvHeads": 4, "headDim": 128, "dtype": "bf16", "maxContext": 32768},
 "requirements": {"accelerator": "nvidia", "minComputeCapability": "8.0"},
 "runtime": {"kind": "vllm", "devices": ["cuda"]},
 "provenance": {"source": "hf://Qwen/Qwen2.5-7B-Instruct", "revision": "a09a35458c702b33eeacc393d103063234e8bc28"}}`

// signedDir writes files under a new directory and signs its manifest with k.
func signedDir(t *testing.T, k manifests.PrivateKey, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, text := range files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	meta, err := manifests.ParseMeta([]byte(testMeta))
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifests.Create(context.Background(), dir, manifests.CreateOptions{Name: "policies", Version: 1, Meta: meta,
		Created: time.Now().UTC().Truncate(time.Second), Expires: time.Now().UTC().Truncate(time.Second).Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Write(dir, m, k); err != nil {
		t.Fatal(err)
	}
	return dir
}

// --kb is verified before anything changes: a bundle signed by another key
// or pinning no kb/ file is refused as a verification failure; a plain
// directory only with --kb-unsigned, and only a directory.
func TestVerifyKB(t *testing.T) {
	trusted, _ := manifests.GenerateKey(nil)
	other, _ := manifests.GenerateKey(nil)
	ok := signedDir(t, trusted, map[string]string{"config.json": "{}", "kb/travel.md": "# 差旅\n出差乘坐高铁。\n"})
	forged := signedDir(t, other, map[string]string{"config.json": "{}", "kb/travel.md": "# 差旅\n头等舱。\n"})
	nokb := signedDir(t, trusted, map[string]string{"config.json": "{}"})
	plain := t.TempDir()
	file := filepath.Join(plain, "a.md")
	os.WriteFile(file, []byte("# a\n"), 0o644)

	check := func(src *KBSource) (*installer, error) {
		in := &installer{o: Options{KB: fakeKB{}, KBSource: src}, log: &strings.Builder{},
			verifier: manifests.Verifier{Trusted: []manifests.PublicKey{trusted.Public()}}}
		return in, in.verifyKB(context.Background())
	}
	in, err := check(&KBSource{Path: ok, Allow: []string{"role:hr"}, Class: "internal"})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(ok, "kb", "travel.md")
	if len(in.kb.ingest.Paths) != 1 || in.kb.ingest.Paths[0] != want || in.kb.ingest.Expect[want] == "" || !in.kb.record.Signed || in.kb.record.Name != "policies" {
		t.Fatalf("plan %+v", in.kb)
	}
	for name, src := range map[string]*KBSource{
		"another key": {Path: forged, Allow: []string{"all"}, Class: "public"},
		"no kb/ tree": {Path: nokb, Allow: []string{"all"}, Class: "public"},
		"plain dir":   {Path: plain, Allow: []string{"all"}, Class: "public"},
	} {
		if _, err := check(src); !errors.Is(err, manifests.ErrVerification) {
			t.Errorf("%s: %v, want a verification error", name, err)
		}
	}
	if _, err := check(&KBSource{Path: ok, Class: "public"}); err == nil {
		t.Error("no access list: accepted")
	}
	if _, err := check(&KBSource{Path: file, Unsigned: true, Allow: []string{"all"}, Class: "public"}); err == nil {
		t.Error("--kb-unsigned on a file: accepted")
	}
	in, err = check(&KBSource{Path: plain, Unsigned: true, Allow: []string{"all"}, Class: "public"})
	if err != nil || in.kb.record.Signed || in.kb.ingest.Expect != nil {
		t.Fatalf("--kb-unsigned DIR: %v, %+v", err, in.kb)
	}
}

type fakeKB struct{}

func (fakeKB) Create(context.Context, string) error                  { return nil }
func (fakeKB) Ingest(context.Context, string, KBIngest) (int, error) { return 0, nil }
func (fakeKB) Check(context.Context, string) error                   { return nil }

var _ KnowledgeBase = fakeKB{}

// storeLayout finds each drift from the shared layout and, with fix,
// repairs it: the root's mode and group, kb/ and its files' modes and
// owners; kb/ is found by name, or by its owner when its name is not
// readable (a locked fscrypt store). A symlink in kb/ is refused.
func TestStoreLayout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to two users")
	}
	gw := harden.Identity{User: "qwen-appliance", UID: 4242, GID: 4242}
	rt := harden.Identity{User: "qwen-runtime", UID: 4243, GID: 4243}
	store := filepath.Join(t.TempDir(), "store")
	in := &installer{o: Options{Store: store}, sys: realSystem()}
	if err := in.storeLayout(gw, rt, false); err != nil {
		t.Fatalf("no store yet: %v", err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(store, 0o700))
	must(os.Chown(store, rt.UID, rt.GID))
	if err := in.storeLayout(gw, rt, false); err == nil || !strings.Contains(err.Error(), "mode 0700") {
		t.Fatalf("a root without the gateway's group: %v", err)
	}
	must(in.storeLayout(gw, rt, true))
	must(in.storeLayout(gw, rt, false))
	fi, _ := os.Stat(store)
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o710 || int(st.Uid) != rt.UID || int(st.Gid) != gw.GID {
		t.Fatalf("root %04o %d:%d", fi.Mode().Perm(), st.Uid, st.Gid)
	}

	for _, dirName := range []string{KBDir, "CIPHERTEXTNAME"} {
		kbDir := filepath.Join(store, dirName)
		db := filepath.Join(kbDir, "kb.db")
		must(os.Mkdir(kbDir, 0o700))
		must(os.Chown(kbDir, gw.UID, gw.GID))
		must(os.WriteFile(db, []byte("x"), 0o644))
		must(os.Chown(db, gw.UID, gw.GID))
		if err := in.storeLayout(gw, rt, false); err == nil || !strings.Contains(err.Error(), "kb.db: mode 0644") {
			t.Fatalf("%s: a group-readable kb.db: %v", dirName, err)
		}
		must(in.storeLayout(gw, rt, true))
		must(in.storeLayout(gw, rt, false))
		must(os.Chown(db, 0, 0))
		if err := in.storeLayout(gw, rt, false); err == nil || !strings.Contains(err.Error(), "owner 0:0") {
			t.Fatalf("%s: a kb.db of root's: %v", dirName, err)
		}
		must(in.storeLayout(gw, rt, true))
		must(os.Symlink("/etc/passwd", filepath.Join(kbDir, "link")))
		if err := in.storeLayout(gw, rt, true); err == nil || !strings.Contains(err.Error(), "link") {
			t.Fatalf("%s: a symlink in kb/: %v", dirName, err)
		}
		must(os.RemoveAll(kbDir))
	}
}
