package backup

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/bundles/volume"
	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/fault"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

// ErrInstalled is returned when restore finds a working installation and
// was not forced.
var ErrInstalled = errors.New("an installation is already there")

// ErrNewerBackup is returned (matching manifests.ErrRollback, a
// verification error) when the backup was taken from a newer bundle
// version than the bundle given.
var ErrNewerBackup = fmt.Errorf("%w: the backup is from a newer bundle version than the bundle given", manifests.ErrRollback)

// ErrInstall is wrapped, with install's own error, when the configuration
// was restored but installing the bundle failed; running restore again
// continues.
var ErrInstall = errors.New("install")

// ErrNoBundle is returned when no bundle was given and the backup holds no
// weights (it was made without --include-model).
var ErrNoBundle = errors.New("restore: no bundle given, and the backup was made without --include-model")

// RestoreOptions say what to restore, where, and with which bundle.
type RestoreOptions struct {
	File       string
	Identities []age.Identity
	Trusted    []manifests.PublicKey // keys the backup manifest must be signed by
	Bundle     string                // the signed bundle to install; the backed-up one (--include-model) when empty
	// BundleTrust are the public-key files the bundle must be signed by;
	// when empty, the keys the backed-up installation trusted
	// (etc/qwen-appliance/trusted/*.pub, restored first) are used.
	BundleTrust []string
	Root        string
	Store       string // the model store; the backed-up one's path when empty
	Force       bool   // restore over an existing installation
	// Install carries the install settings the caller wants (log, network
	// namespace, KDF cost…); restore fills in the bundle, root, store,
	// trusted keys and, where unset, the backed-up installation's settings.
	Install provision.Options

	install func(context.Context, provision.Options) (*provision.Result, error) // provision.Install when nil
}

// RestoreResult is what restore did.
type RestoreResult struct {
	Manifest *Manifest
	Backup   string // how the audit log's restore record names the backup
	Install  *provision.Result
}

// markerFile records a restore in progress, so that a re-run after a crash
// continues instead of refusing the half-restored installation.
const markerFile = "restore-in-progress.json"

// stagePrefix names the private directories restore decrypts into.
const stagePrefix = ".qwen-appliance-restore-"

// Restore rebuilds an installation from a backup: it verifies the whole
// archive in a private staging directory before changing anything, puts
// back the configuration (tokens, TLS CA and keys, audit and store keys)
// and the audit log, appends a signed restore record to the log, then
// installs the bundle with the backed-up settings, so the same tokens work
// and the audit chain continues. A re-run after an interruption converges.
// Errors: ErrInstalled, ErrNewerBackup, ErrVerification (wrapped).
func Restore(ctx context.Context, o RestoreOptions) (_ *RestoreResult, err error) {
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	rp := func(p string) string { return filepath.Join(root, p) }
	marker := rp(filepath.Join(provision.StateDir, markerFile))
	if _, err := state.Load(root); err == nil && !o.Force && !exists(marker) {
		return nil, fmt.Errorf("restore: %w at %s (state %s)", ErrInstalled, root, state.Path(root))
	}
	var bv uint64
	if o.Bundle != "" {
		if bv, err = bundleVersion(o.Bundle); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}

	// 1. Verify everything in a private staging directory.
	if err := os.MkdirAll(rp("var/lib"), 0o755); err != nil {
		return nil, err
	}
	// A restore killed earlier left its staging copy (decrypted secrets):
	// remove it first.
	if old, _ := filepath.Glob(rp("var/lib/" + stagePrefix + "*")); len(old) > 0 {
		for _, d := range old {
			if err := os.RemoveAll(d); err != nil {
				return nil, fmt.Errorf("restore: remove the staging copy a killed restore left: %w", err)
			}
		}
	}
	stage, err := os.MkdirTemp(rp("var/lib"), stagePrefix)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)
	rep, err := open(ctx, o.File, o.Identities, o.Trusted, stage, keepDurable)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	m := rep.Manifest
	// The knowledge base's snapshot is checked before anything changes,
	// and install puts it in place of the store's.
	var kbSnap string
	if o.Install.KB != nil {
		if _, err := checkKB(ctx, stage, m, o.Install.KB.Check); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		kbSnap = kbSnapshot(stage, m)
	}
	bundle := o.Bundle
	if bundle == "" {
		// A backup made with --include-model holds the whole signed bundle;
		// install verifies it like any other.
		if !m.IncludesModel {
			return nil, ErrNoBundle
		}
		bundle = filepath.Join(stage, "bundle")
		if bv, err = stageBundle(bundle); err != nil {
			return nil, fmt.Errorf("restore: the backed-up bundle: %w", err)
		}
	}
	if m.Bundle.Version > bv {
		return nil, fmt.Errorf("restore: %w (backup: %s version %d; bundle %s: version %d)", ErrNewerBackup, m.Bundle.Name, m.Bundle.Version, bundle, bv)
	}
	res := &RestoreResult{Manifest: m, Backup: recordName(o.File, m)}

	// 2. From here the host changes; the marker lets a re-run continue.
	if err := os.MkdirAll(filepath.Dir(marker), 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(marker, []byte(fmt.Sprintf("{\"backup\":%q}\n", res.Backup)), 0o600); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	hroot := harden.Root(root)
	if root == "/" {
		hroot = ""
	}
	id, err := harden.CreateIdentity(ctx, hroot)
	if err != nil {
		return nil, fmt.Errorf("restore: service identity: %w", err)
	}
	for _, mb := range m.Members {
		if mb.Kind != KindConfig {
			continue
		}
		if err := placeFile(filepath.Join(stage, filepath.FromSlash(mb.Name)), rootPath(root, mb.Name), os.FileMode(mb.Mode), true); err != nil {
			return nil, fmt.Errorf("restore %s: %w", mb.Name, err)
		}
	}
	if err := fault.After(os.Stderr, "restore", "restore-config"); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := restoreAudit(root, stage, m, res.Backup, &id.Gateway); err != nil {
		return nil, fmt.Errorf("restore: audit log: %w", err)
	}
	if err := fault.After(os.Stderr, "restore", "restore-audit"); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}

	// 3. Install the bundle over the restored configuration.
	iopts := o.Install
	iopts.Bundle, iopts.Root = bundle, root
	iopts.KBRestore = kbSnap
	iopts.Store = o.Store
	if iopts.Store == "" {
		iopts.Store = m.Store
	}
	iopts.TrustedKeys = o.BundleTrust
	if len(iopts.TrustedKeys) == 0 {
		iopts.TrustedKeys, _ = filepath.Glob(rp(filepath.Join(provision.ConfigDir, "trusted", "*.pub")))
		if len(iopts.TrustedKeys) == 0 {
			return nil, errors.New("restore: the backup holds no trusted bundle keys; pass the bundle's public key")
		}
	}
	if err := applySettings(&iopts, filepath.Join(stage, "root", filepath.FromSlash(state.Dir), state.File)); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	install := o.install
	if install == nil {
		install = provision.Install
	}
	ir, err := install(ctx, iopts)
	res.Install = ir
	if err != nil {
		return res, fmt.Errorf("restore: %w %s: %w", ErrInstall, bundle, err)
	}
	if err := os.Remove(marker); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	return res, nil
}

// recordName is how the audit log's restore record names a backup: its
// file name and its manifest's hash.
func recordName(file string, m *Manifest) string {
	raw, _ := Marshal(m)
	sum := sha256.Sum256(raw)
	return filepath.Base(file) + " sha256:" + hex.EncodeToString(sum[:])
}

// rootPath maps a "root/…" member name to its path under root.
func rootPath(root, name string) string {
	return filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(name, "root/")))
}

// stageBundle gives the backed-up bundle's files the modes its manifest
// records (the store keeps its copy read-only) and returns its version;
// install then verifies it like any other bundle.
func stageBundle(dir string) (uint64, error) {
	data, err := os.ReadFile(filepath.Join(dir, manifests.ManifestFile))
	if err != nil {
		return 0, err
	}
	bm, err := manifests.Parse(data)
	if err != nil {
		return 0, err
	}
	for _, f := range bm.Files {
		if err := os.Chmod(filepath.Join(dir, filepath.FromSlash(f.Path)), os.FileMode(f.FileMode())); err != nil {
			return 0, err
		}
	}
	return bm.Version, nil
}

// bundleVersion reads the version a bundle claims, unpacked or packed;
// install verifies its signature afterwards.
func bundleVersion(dir string) (uint64, error) {
	if data, err := os.ReadFile(filepath.Join(dir, manifests.ManifestFile)); err == nil {
		bm, err := manifests.Parse(data)
		if err != nil {
			return 0, fmt.Errorf("bundle %s: %w", dir, err)
		}
		return bm.Version, nil
	}
	idx, err := volume.FindIndex(dir)
	if err != nil {
		return 0, fmt.Errorf("bundle %s: no manifest.json and no volume index", dir)
	}
	data, err := os.ReadFile(idx)
	if err != nil {
		return 0, err
	}
	x, err := volume.ParseIndex(data)
	if err != nil {
		return 0, fmt.Errorf("bundle %s: %w", dir, err)
	}
	return x.Version, nil
}

// placeFile puts the staged file src at dst atomically with mode, unless
// dst already has the same content and mode. The staged copy is not needed
// afterwards: it is moved when it lies on dst's filesystem (restore stages
// under ROOT/var/lib), copied otherwise. durable syncs the file and its
// directory first; a drill's scratch root needs no durability.
func placeFile(src, dst string, mode os.FileMode, durable bool) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if same, _ := sameFile(src, dst, mode); same {
		return nil
	}
	if err := moveFile(src, dst, mode, durable); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.ReadFrom(in)
	err = errors.Join(err, tmp.Chmod(mode))
	if durable {
		err = errors.Join(err, tmp.Sync())
	}
	err = errors.Join(err, tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if durable {
		return atomicfile.SyncDir(filepath.Dir(dst))
	}
	return nil
}

// moveFile renames src to dst with mode; it fails, changing nothing at
// dst, when the two lie on different filesystems.
func moveFile(src, dst string, mode os.FileMode, durable bool) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	err = f.Chmod(mode)
	if durable {
		err = errors.Join(err, f.Sync())
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	if durable {
		return atomicfile.SyncDir(filepath.Dir(dst))
	}
	return nil
}

// sameFile reports whether b is a regular file with mode and a's content,
// reading both a chunk at a time (an audit log can be gigabytes).
func sameFile(a, b string, mode os.FileMode) (bool, error) {
	fb, err := os.Lstat(b)
	if err != nil || !fb.Mode().IsRegular() || fb.Mode().Perm() != mode.Perm() {
		return false, err
	}
	fa, err := os.Stat(a)
	if err != nil || fa.Size() != fb.Size() {
		return false, err
	}
	ra, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer ra.Close()
	rb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer rb.Close()
	end := func(err error) bool { return err == io.EOF || err == io.ErrUnexpectedEOF }
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for {
		na, erra := io.ReadFull(ra, ba)
		nb, errb := io.ReadFull(rb, bb)
		switch {
		case !bytes.Equal(ba[:na], bb[:nb]):
			return false, nil
		case end(erra) && end(errb):
			return true, nil
		case (erra != nil && !end(erra)) || (errb != nil && !end(errb)):
			return false, errors.Join(erra, errb)
		case erra != nil || errb != nil:
			return false, nil // one ended first: it changed while read
		}
	}
}

// restoreAudit puts the audit files back and appends a signed restore
// record naming the backup after the recorded head. A current log that
// already continues the backed-up one (a re-run, or the same host) is kept.
// The files are given to id, and made durable, unless id is nil (a drill's
// scratch root).
func restoreAudit(root, stage string, m *Manifest, backup string, id *harden.Identity) error {
	var head string
	var headSize int64
	for _, mb := range m.Members {
		if mb.Kind != KindAudit {
			continue
		}
		src, dst := filepath.Join(stage, filepath.FromSlash(mb.Name)), rootPath(root, mb.Name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		if mb.Name == m.AuditHead.Member {
			head, headSize = dst, mb.Size
			if ok, _ := continues(dst, src); ok {
				continue
			}
		}
		if err := placeFile(src, dst, 0o600, id != nil); err != nil {
			return err
		}
	}
	if head == "" {
		return nil
	}
	done, err := hasRestoreRecord(head, headSize, backup)
	if err != nil {
		return err
	}
	if !done {
		k, err := manifests.LoadPrivateKey(filepath.Join(root, provision.ConfigDir, "audit.key"))
		if err != nil {
			return err
		}
		l, err := audit.Open(audit.Options{Path: head, Key: &k})
		if err != nil {
			return err
		}
		l.Append(audit.Record{Kind: audit.KindRestore, Backup: backup})
		if err := l.Close(); err != nil {
			return err
		}
	}
	if id == nil {
		return nil
	}
	dir := filepath.Dir(head)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Lchown(filepath.Join(dir, e.Name()), id.UID, id.GID); err != nil {
			return err
		}
	}
	return os.Chown(dir, id.UID, id.GID)
}

// continues reports whether the file at cur starts with the bytes of the
// backed-up file at backed.
func continues(cur, backed string) (bool, error) {
	a, err := os.Open(cur)
	if err != nil {
		return false, err
	}
	defer a.Close()
	b, err := os.Open(backed)
	if err != nil {
		return false, err
	}
	defer b.Close()
	bi, err := b.Stat()
	if err != nil {
		return false, err
	}
	ha, hb := sha256.New(), sha256.New()
	if n, err := io.CopyN(ha, a, bi.Size()); err != nil || n != bi.Size() {
		return false, nil
	}
	if _, err := io.Copy(hb, b); err != nil {
		return false, err
	}
	return bytes.Equal(ha.Sum(nil), hb.Sum(nil)), nil
}

// hasRestoreRecord reports whether the log already has a restore record
// naming backup (a re-run after a crash). Only what follows the backed-up
// part (from off) can hold one: the record names the backup's manifest,
// whose hashes cover that part.
func hasRestoreRecord(path string, off int64, backup string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return false, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	want := []byte(`"kind":"` + audit.KindRestore + `"`)
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), want) {
			continue
		}
		var r audit.Record
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Kind == audit.KindRestore && r.Backup == backup {
			return true, nil
		}
	}
	return false, sc.Err()
}

// applySettings fills unset install settings from the backed-up state.
func applySettings(o *provision.Options, stateFile string) error {
	data, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := state.Parse(data)
	if err != nil {
		return err
	}
	if o.Backend == "" && st.Store.Backend != "" {
		o.Backend = storage.Backend(st.Store.Backend)
	}
	if len(o.ProbeTargets) == 0 {
		o.ProbeTargets = st.Firewall.ProbeTargets
	}
	s := st.Settings
	if s == nil {
		return nil
	}
	if o.Listen == "" {
		o.Listen = s.Listen
	}
	if o.MetricsListen == "" {
		o.MetricsListen = s.MetricsListen
	}
	if o.Host == "" {
		o.Host = s.Host
	}
	for _, l := range []struct {
		dst *[]netip.Prefix
		src []string
	}{{&o.ClientCIDRs, s.ClientCIDRs}, {&o.AdminCIDRs, s.AdminCIDRs}} {
		if *l.dst != nil || l.src == nil {
			continue
		}
		*l.dst = []netip.Prefix{}
		for _, c := range l.src {
			p, err := netip.ParsePrefix(c)
			if err != nil {
				return fmt.Errorf("backed-up settings: %w", err)
			}
			*l.dst = append(*l.dst, p)
		}
	}
	if o.Egress == nil && s.Egress != nil {
		o.Egress = []harden.EgressRule{}
		for _, e := range s.Egress {
			r, err := harden.ParseEgress(e)
			if err != nil {
				return fmt.Errorf("backed-up settings: %w", err)
			}
			o.Egress = append(o.Egress, r)
		}
	}
	return nil
}
