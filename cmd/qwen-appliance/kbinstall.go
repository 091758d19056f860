package main

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
	"syscall"

	"github.com/qwen-appliance/qwen-appliance/backup"
	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/kb"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// installKB is the knowledge base install creates, fills and checks:
// package kb behind provision's seam (provision must not link it).
type installKB struct{}

var _ provision.KnowledgeBase = installKB{}

func (installKB) Create(_ context.Context, path string) error {
	if _, err := os.Lstat(path); err == nil {
		// One there already (an upgrade, a restore): read-only, so that
		// checking it writes nothing.
		k, err := kb.OpenReadOnly(path)
		if err != nil {
			return err
		}
		return k.Close()
	}
	k, err := kb.Open(path)
	if err != nil {
		return err
	}
	return k.Close()
}

// Ingest reads, checks and extracts every file before the first write, so
// that a bad or unsigned file leaves the knowledge base as it was; then
// each file is stored in its own transaction, its hash checked again as it
// is read.
func (installKB) Ingest(ctx context.Context, path string, in provision.KBIngest) (_ int, err error) {
	allow, err := kb.ParsePrincipals(in.Allow...)
	if err != nil {
		return 0, fmt.Errorf("--kb-allow: %w", err)
	}
	class, err := kb.ParseClass(in.Class)
	if err != nil {
		return 0, fmt.Errorf("--kb-class: %w", err)
	}
	var files []string
	for _, root := range in.Paths {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if p != root && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				return nil
			}
			files = append(files, p)
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	for _, p := range files {
		if err := precheck(p, in.Expect); err != nil {
			return 0, err
		}
	}
	k, err := kb.Open(path)
	if err != nil {
		return 0, err
	}
	defer k.Close()
	if in.AuditLog != "" {
		o := audit.Options{Path: in.AuditLog}
		if in.AuditKey != "" {
			key, err := manifests.LoadPrivateKey(in.AuditKey)
			if err != nil {
				return 0, err
			}
			o.Key = &key
		}
		l, err := audit.Open(o)
		if err != nil {
			return 0, fmt.Errorf("audit log: %w", err)
		}
		defer func() { err = errors.Join(err, l.Close()) }()
		k.SetAuditor(l)
	}
	var errs []error
	n := 0
	err = k.IngestFiles(ctx, in.Paths, kb.IngestOptions{Allow: allow, Class: class, Collection: in.Collection, Expect: in.Expect},
		func(r kb.FileResult) {
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.Path, r.Err))
				return
			}
			n++
		})
	if err := errors.Join(append(errs, err)...); err != nil {
		if errors.Is(err, kb.ErrNotSigned) {
			err = fmt.Errorf("%w: %w", manifests.ErrVerification, err)
		}
		return n, err
	}
	return n, nil
}

// precheck reads one file as ingest will: a regular file of a known type,
// within the size cap, that extracts, and, for a signed bundle, hashes to
// what its manifest pins.
func precheck(p string, expect map[string]string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: %w: not a regular file", p, kb.ErrUnknownType)
	}
	if fi.Size() > kb.DefaultMaxFileBytes {
		return fmt.Errorf("%s: %w: %d bytes", p, kb.ErrTooLarge, fi.Size())
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if expect != nil {
		sum := sha256.Sum256(data)
		if want, ok := expect[p]; !ok || want != hex.EncodeToString(sum[:]) {
			return fmt.Errorf("%s: %w: %w", p, manifests.ErrVerification, kb.ErrNotSigned)
		}
	}
	format := kb.Format(p)
	if format == "" {
		return fmt.Errorf("%s: %w", p, kb.ErrUnknownType)
	}
	if _, err := kb.Extract(format, data); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

// Check runs SQLite's integrity check and kb.Check's content hashes on the
// database at path, read-only.
func (installKB) Check(ctx context.Context, path string) error {
	return checkKBFile(ctx, path)
}

// checkKBFile is what a backed-up knowledge base must pass: SQLite's
// integrity check, and every document's chunks hashing to what ingest
// recorded.
func checkKBFile(ctx context.Context, path string) (err error) {
	k, err := kb.OpenReadOnly(path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, k.Close()) }()
	if err := k.Integrity(ctx); err != nil {
		return err
	}
	probs, err := k.Check(ctx, kb.CheckOptions{UID: -1})
	if err != nil {
		return err
	}
	var bad []string
	for _, p := range probs {
		if p.Check == "content" {
			bad = append(bad, p.Detail)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("knowledge base %s: %w: %s", path, kb.ErrDamaged, strings.Join(bad, "; "))
	}
	return nil
}

// kbBackupExtra is the knowledge base's member of a backup of the
// installation under root: a consistent snapshot taken while the gateway
// serves (SQLite's VACUUM INTO, one read transaction that never blocks the
// gateway's writers; SQLite gives any -wal/-shm file it makes the
// database's owner and mode). The snapshot is made in
// a private directory inside the store's kb/ directory, so its plaintext
// never leaves the encrypted store, and is unlinked as soon as it is open.
// None when the installation has no knowledge base.
func kbBackupExtra(root string) []backup.Extra {
	st, err := state.Load(root)
	if err != nil || st.Store.Dir == "" {
		return nil
	}
	path := provision.KBPath(st.Store.Dir)
	if _, err := os.Lstat(path); err != nil {
		if st.Gateway.KB == "" {
			return nil // installed before install made a knowledge base
		}
		// The gateway serves one, but it cannot be read (a locked store
		// shows ciphertext names): the backup fails rather than leave
		// the documents out.
		return []backup.Extra{{Name: backup.KBExtra, Open: func(context.Context) (io.ReadCloser, int64, error) {
			return nil, 0, fmt.Errorf("the knowledge base %s: %w (is the store locked? unlock it with 'qwen-appliance storage unlock')", path, err)
		}}}
	}
	return []backup.Extra{{Name: backup.KBExtra, Open: func(ctx context.Context) (io.ReadCloser, int64, error) {
		return kbSnapshot(ctx, path)
	}}}
}

func kbSnapshot(ctx context.Context, path string) (_ io.ReadCloser, _ int64, err error) {
	k, err := kb.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("knowledge base: %w", err)
	}
	defer func() { err = errors.Join(err, k.Close()) }()
	// Only root and the directory's owner may enter it; umask keeps the
	// copy SQLite creates private until Snapshot sets its mode.
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".kb-backup-")
	if err != nil {
		return nil, 0, fmt.Errorf("knowledge base: %w", err)
	}
	defer os.RemoveAll(tmp)
	if fi, err := os.Stat(filepath.Dir(path)); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			os.Chown(tmp, int(st.Uid), int(st.Gid))
		}
	}
	dst := filepath.Join(tmp, "kb.db")
	if err := k.Snapshot(ctx, dst); err != nil {
		return nil, 0, fmt.Errorf("knowledge base: %w", err)
	}
	f, err := os.Open(dst)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, fi.Size(), nil
}
