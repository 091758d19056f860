package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

// KBDir is the store's directory for the knowledge base: the gateway's
// user's (mode 0700), the store's only part that is not the runtime's.
const KBDir = "kb"

// KBPath is the knowledge base's file in the store at store; it is the
// same path as kb.StorePath, which provision must not link.
func KBPath(store string) string { return filepath.Join(store, KBDir, "kb.db") }

// KnowledgeBase is what install does to the knowledge base's database.
// The CLI passes one backed by package kb: provision must not link the
// serving code.
type KnowledgeBase interface {
	// Create makes an empty knowledge base at path when there is none,
	// and checks that a file already there is one.
	Create(ctx context.Context, path string) error
	// Ingest stores the files of in into the knowledge base at path. It
	// reads and checks every file first (each against in.Expect when
	// set, which catches a file changed since its bundle was verified)
	// and writes nothing unless all pass; an error that wraps
	// manifests.ErrVerification means a file did not match its signature.
	Ingest(ctx context.Context, path string, in KBIngest) (documents int, err error)
	// Check opens the database at path read-only and runs its integrity
	// and content checks (backups are checked with it before they are
	// put back).
	Check(ctx context.Context, path string) error
}

// KBIngest is one ingest at install time.
type KBIngest struct {
	Paths      []string          // files and directories
	Expect     map[string]string // SHA-256 by absolute path, for a signed bundle's kb/ tree; nil for a plain directory
	Allow      []string          // principals: role:NAME, user:TOKEN-ID, all
	Class      string            // public, internal or secret
	Collection string
	// AuditLog and AuditKey are the gateway's audit log and checkpoint
	// key, which the kb.ingest events join (the gateway serves already,
	// and appends under the same lock).
	AuditLog, AuditKey string
}

// KBSource is what install --kb asks for: documents to ingest.
type KBSource struct {
	// Path is a signed bundle directory whose manifest pins a kb/ tree,
	// verified against the install's trusted keys; or, with Unsigned, a
	// plain directory of documents the operator vouches for.
	Path       string
	Unsigned   bool
	Allow      []string
	Class      string
	Collection string
}

// kbPlan is a verified KBSource, ready to ingest.
type kbPlan struct {
	ingest KBIngest
	record state.KBSource
}

// verifyKB checks the documents install --kb names before anything on the
// host changes: a bundle's signature (by the keys the model bundle must be
// signed by) and that its manifest pins a kb/ tree; a plain directory only
// that it is one. Every file's hash is checked again as it is read.
func (in *installer) verifyKB(ctx context.Context) error {
	src := in.o.KBSource
	if src == nil {
		return nil
	}
	if in.o.KB == nil {
		return errors.New("install: --kb: this installer has no knowledge base to ingest into")
	}
	if len(src.Allow) == 0 || src.Class == "" {
		return errors.New("install: --kb: the documents need an access list and a class (--kb-allow, --kb-class)")
	}
	abs, err := filepath.Abs(src.Path)
	if err != nil {
		return err
	}
	p := &kbPlan{
		ingest: KBIngest{Allow: src.Allow, Class: src.Class, Collection: src.Collection},
		record: state.KBSource{Path: abs, Allow: src.Allow, Class: src.Class, Collection: src.Collection},
	}
	if src.Unsigned {
		fi, err := os.Stat(abs)
		if err != nil {
			return fmt.Errorf("install: --kb: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("install: --kb %s: not a directory", abs)
		}
		in.logf("warning: --kb-unsigned: the documents in %s are ingested without a signature; the operator vouches for them", abs)
		p.ingest.Paths = []string{abs}
		in.kb = p
		return nil
	}
	if _, err := os.Lstat(filepath.Join(abs, manifests.ManifestFile)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("install: --kb %s: %w: not a signed bundle (no %s); sign it with 'qwen-appliance manifest create', or pass --kb-unsigned to ingest a plain directory on your word", abs, manifests.ErrVerification, manifests.ManifestFile)
	}
	v := manifests.Verifier{Trusted: in.verifier.Trusted, Threshold: in.verifier.Threshold}
	s, err := v.Open(abs)
	if err != nil {
		return fmt.Errorf("install: --kb: verify bundle %s: %w", abs, err)
	}
	p.ingest.Expect = map[string]string{}
	for _, f := range s.Manifest.Files {
		if !strings.HasPrefix(f.Path, KBDir+"/") {
			continue
		}
		fp := filepath.Join(abs, filepath.FromSlash(f.Path))
		p.ingest.Paths = append(p.ingest.Paths, fp)
		p.ingest.Expect[fp] = f.SHA256
	}
	if len(p.ingest.Paths) == 0 {
		return fmt.Errorf("install: --kb: bundle %s: %w: its manifest pins no kb/ files", abs, manifests.ErrVerification)
	}
	sum := sha256.Sum256(s.Raw)
	p.record.Signed, p.record.Name, p.record.Version = true, s.Manifest.Name, s.Manifest.Version
	p.record.ManifestSHA256, p.record.Signers = hex.EncodeToString(sum[:]), s.KeyIDs
	in.logf("--kb: signature by %v valid: %s version %d, %d kb/ files", s.KeyIDs, s.Manifest.Name, s.Manifest.Version, len(p.ingest.Paths))
	in.kb = p
	return ctx.Err()
}

// guest is the store's guest: the gateway's user and the kb/ directory.
func guest(gw harden.Identity) *storage.Guest {
	return &storage.Guest{Dir: KBDir, Owner: storage.Owner{UID: gw.UID, GID: gw.GID, Name: gw.User}}
}

// knowledgeBase makes the store's knowledge base the gateway's: it creates
// the database when missing (a restore puts the backed-up one in place
// first), ingests install --kb's documents, and gives every file of kb/ to
// the gateway's user, mode 0600. An existing knowledge base is kept as it
// is: upgrades and rollbacks never touch its documents.
func (in *installer) knowledgeBase(ctx context.Context, gw harden.Identity) error {
	if in.o.KB == nil {
		return nil
	}
	path := KBPath(in.o.Store)
	if in.o.KBRestore != "" {
		if err := in.placeKB(ctx, path, gw); err != nil {
			return fmt.Errorf("knowledge base: %w", err)
		}
	}
	if err := in.o.KB.Create(ctx, path); err != nil {
		return fmt.Errorf("knowledge base: %w", err)
	}
	if err := in.ownKB(filepath.Dir(path), gw, true); err != nil {
		return fmt.Errorf("knowledge base: %w", err)
	}
	in.logf("knowledge base %s (the gateway's %s, mode 0600)", path, gw.User)
	return nil
}

// ingestKB stores install --kb's documents. It runs once the gateway
// serves (switchTo, before the smoke test), so the kb.ingest events join the
// gateway's audit log, signed like its own lines; a failure is undone with
// the rest of the attempt (a first install's store goes; on an upgrade, the
// documents ingested before it stay, each whole).
func (in *installer) ingestKB(ctx context.Context, gw harden.Identity) error {
	if in.kb == nil || in.o.KB == nil {
		return nil
	}
	path := KBPath(in.o.Store)
	ing := in.kb.ingest
	ing.AuditLog = in.l.auditLog()
	if k := in.l.auditKey() + ".key"; fileExists(k) {
		ing.AuditKey = k
	}
	n, err := in.o.KB.Ingest(ctx, path, ing)
	if err != nil {
		return fmt.Errorf("knowledge base: ingest %s: %w", in.kb.record.Path, err)
	}
	if err := in.ownKB(filepath.Dir(path), gw, true); err != nil {
		return fmt.Errorf("knowledge base: %w", err)
	}
	rec := in.kb.record
	rec.Files, rec.Ingested = n, in.now()
	in.kbRecord = &rec
	in.logf("knowledge base: ingested %d document(s) from %s (kb.ingest events in %s)", n, rec.Path, ing.AuditLog)
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// placeKB puts a backed-up knowledge base (checked first) in place of the
// store's, with no -wal or -shm left from the one it replaces. The gateway
// has been stopped (switchTo starts it again); undo puts the replaced files
// back.
func (in *installer) placeKB(ctx context.Context, path string, gw harden.Identity) error {
	if err := in.o.KB.Check(ctx, in.o.KBRestore); err != nil {
		return fmt.Errorf("the backed-up knowledge base %s: %w", in.o.KBRestore, err)
	}
	if in.prev != nil && in.running(in.prev.Gateway.Service) {
		in.logf("stopping the gateway (%s) to put the backed-up knowledge base in place", describe(in.prev.Gateway.Service))
		if err := in.stopService(in.prev.Gateway.Service, 30*time.Second); err != nil {
			return err
		}
		in.gatewayStopped = true
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".kb-restore-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	src, err := os.Open(in.o.KBRestore)
	if err != nil {
		tmp.Close()
		return err
	}
	_, err = io.Copy(tmp, src)
	src.Close()
	if err := errors.Join(err, tmp.Chmod(0o600), tmp.Chown(gw.UID, gw.GID), tmp.Sync(), tmp.Close()); err != nil {
		return err
	}
	// The files replaced are kept until install succeeds.
	aside, err := os.MkdirTemp(dir, ".kb-replaced-*")
	if err != nil {
		return err
	}
	var moved []string
	in.onUndo(func() error {
		var errs []error
		for _, n := range moved {
			errs = append(errs, os.Rename(filepath.Join(aside, n), filepath.Join(dir, n)))
		}
		return errors.Join(append(errs, os.RemoveAll(aside))...)
	})
	in.onDone(func() { os.RemoveAll(aside) })
	for _, n := range []string{filepath.Base(path), filepath.Base(path) + "-wal", filepath.Base(path) + "-shm"} {
		err := os.Rename(filepath.Join(dir, n), filepath.Join(aside, n))
		switch {
		case err == nil:
			moved = append(moved, n)
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	in.logf("knowledge base: put the backed-up database in place")
	return nil
}

// ownKB walks the kb/ directory dir. With fix it gives every entry to the
// gateway's user (id) and takes group and other bits away; without, it
// returns an error naming the first entry that is otherwise.
func (in *installer) ownKB(dir string, id harden.Identity, fix bool) error {
	return in.privateTree(dir, id, fix, "the gateway's")
}

// storeLayout checks (or, with fix, restores) the store's shared layout:
// its root the runtime's (rt) with the gateway's group (gw) and mode 0710,
// and its kb/ directory the gateway's. The kb/ directory is found by name,
// or, in a locked fscrypt store whose names are ciphertext, as the one
// top-level directory the gateway's user owns.
func (in *installer) storeLayout(gw, rt harden.Identity, fix bool) error {
	dir := in.o.Store
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	uid, gid := ownerOf(fi)
	if uid != rt.UID || gid != gw.GID || fi.Mode().Perm() != storage.GuestRootMode {
		if !fix {
			return fmt.Errorf("%s: mode %04o, owner %d:%d (want %04o, the runtime's uid %d and the gateway's group %d)", dir, fi.Mode().Perm(), uid, gid, storage.GuestRootMode, rt.UID, gw.GID)
		}
		if err := in.sys.host.Chown(dir, rt.UID, gw.GID); err != nil {
			return err
		}
		if err := os.Chmod(dir, storage.GuestRootMode); err != nil {
			return err
		}
	}
	kbDir := filepath.Join(dir, KBDir)
	if _, err := os.Lstat(kbDir); err != nil {
		entries, _ := os.ReadDir(dir)
		kbDir = ""
		for _, e := range entries {
			if fi, err := e.Info(); err == nil && e.IsDir() {
				if uid, _ := ownerOf(fi); uid == gw.UID {
					kbDir = filepath.Join(dir, e.Name())
				}
			}
		}
		if kbDir == "" {
			return nil
		}
	}
	return in.ownKB(kbDir, gw, fix)
}

// storeHasGuest reports whether the store already has the shared layout to
// repair: an unencrypted store always may; an encrypted one once its
// metadata records the guest (Unlock refuses the layout otherwise).
func (in *installer) storeHasGuest() bool {
	if in.o.Backend == BackendNone {
		return true
	}
	s, err := storage.Open(in.o.Store, storage.Options{})
	return err == nil && s.Meta.Guest != nil
}

// kbDrift lists how the store's shared layout and the knowledge base differ
// from what install leaves.
func (in *installer) kbDrift(prev *state.State) []string {
	var out []string
	if in.o.KB != nil && prev.ServiceUID > 0 && prev.RuntimeUID > 0 {
		gw := harden.Identity{User: prev.ServiceUser, UID: prev.ServiceUID, GID: prev.ServiceGID}
		rt := harden.Identity{User: prev.RuntimeUser, UID: prev.RuntimeUID, GID: prev.RuntimeGID}
		if err := in.storeLayout(gw, rt, false); err != nil {
			out = append(out, "model store layout: "+err.Error())
		}
		if _, err := os.Lstat(KBPath(in.o.Store)); err != nil {
			out = append(out, "knowledge base: "+err.Error())
		}
	}
	if in.gatewayKBChanged() {
		out = append(out, fmt.Sprintf("the gateway: serves the knowledge base %q, want %q", prev.Gateway.KB, in.kbServed()))
	}
	return out
}

// kbPlanLine says what --kb would ingest, for the dry run's plan.
func (in *installer) kbPlanLine() string {
	if in.kb == nil {
		return ""
	}
	return fmt.Sprintf("; ingest %d path(s) from %s for %v, class %s", len(in.kb.ingest.Paths), in.kb.record.Path, in.kb.record.Allow, in.kb.record.Class)
}
