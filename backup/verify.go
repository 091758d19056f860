package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// VerifyOptions say which archive to check and with what.
type VerifyOptions struct {
	File       string
	Identities []age.Identity
	Trusted    []manifests.PublicKey // keys the backup manifest must be signed by
	// Drill also restores the archive into a scratch root (Restore's own
	// steps, less those that change the host: no service identity, no
	// chown, no install) and checks what it restored: the token file has an
	// active token, the TLS server certificate chains to the CA, the audit
	// key pair matches, the audit log verifies across its new restore
	// record, the harden record matches its rules file, and HostChecks.
	Drill bool
	// HostChecks, with Drill, runs the verify package's checks against the
	// scratch root, given the backed-up install record with its paths moved
	// under that root. The CLI passes one backed by package verify, which
	// backup must not link (verify links kb); nil runs none.
	HostChecks func(ctx context.Context, root string, st *state.State, m *Manifest) []Check
	Scratch    string // where to extract (a private temporary directory inside it); os.TempDir() when empty
	// CheckKB checks the knowledge-base snapshot (KBMember), when the
	// archive holds one: SQLite's integrity check and the stored chunks'
	// hashes. The CLI passes one backed by package kb, which backup must
	// not link. Nil skips the check (and the report says so).
	CheckKB func(ctx context.Context, path string) error
	Now     func() time.Time
}

// Report is what a verification found.
type Report struct {
	File     string        `json:"file"`
	Manifest *Manifest     `json:"manifest"`
	Signers  []string      `json:"signers"`
	Audit    *audit.Report `json:"audit,omitempty"`
	KB       string        `json:"kb,omitempty"` // what the knowledge-base snapshot's check found
	Drill    []Check       `json:"drill,omitempty"`
	Warnings []string      `json:"warnings,omitempty"`
}

// Check is one drill check. OK is false only when it failed: a check that
// needs the running host is reported with Status NotApplicable.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Status string `json:"status"` // Pass, Fail or NotApplicable
	Detail string `json:"detail"`
}

// Check statuses.
const (
	Pass          = "pass"
	Fail          = "fail"
	NotApplicable = "not-applicable"
)

// Verify decrypts and checks the archive in a private scratch directory
// that it removes afterwards. Errors match ErrVerification when the archive
// or its audit log fails a check (ErrIdentity for a wrong identity).
func Verify(ctx context.Context, o VerifyOptions) (*Report, error) {
	base, err := os.MkdirTemp(o.Scratch, "qwen-backup-verify-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(base)
	// The archive's members, and beside them the drill's scratch root.
	dir := filepath.Join(base, "archive")
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	// A drill restores from the extracted copy: it needs every member. A
	// plain verify writes only what it reads again.
	k := keepChecked
	if o.Drill {
		k = keepAll
	}
	rep, err := open(ctx, o.File, o.Identities, o.Trusted, dir, k)
	if err != nil {
		return rep, err
	}
	if rep.KB, err = checkKB(ctx, dir, rep.Manifest, o.CheckKB); err != nil {
		return rep, fmt.Errorf("backup %s: %w", o.File, err)
	}
	if o.Drill {
		if o.Now == nil {
			o.Now = time.Now
		}
		rep.Drill = drill(ctx, dir, filepath.Join(base, "root"), rep.Manifest, o)
		for _, c := range rep.Drill {
			if !c.OK {
				return rep, verificationf("drill: %s: %s", c.Name, c.Detail)
			}
		}
	}
	return rep, nil
}

// open extracts and checks the archive into dir, then checks its audit log.
// k: see extract.
func open(ctx context.Context, file string, ids []age.Identity, trusted []manifests.PublicKey, dir string, k keep) (*Report, error) {
	rep := &Report{File: file}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	chain := &auditStream{dir: dir}
	defer chain.stop()
	m, err := extract(ctx, f, ids, trusted, dir, k, chain)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", file, err)
	}
	rep.Manifest = m
	for _, k := range trusted {
		rep.Signers = append(rep.Signers, k.ID)
	}
	ar, err := checkAudit(dir, m, chain)
	rep.Audit = ar
	if err != nil {
		return rep, fmt.Errorf("backup %s: %w", file, err)
	}
	return rep, nil
}

// auditPubMember is where the audit checkpoint key's public half sits in
// the archive.
const auditPubMember = "root/etc/qwen-appliance/audit.pub"

// checkAudit verifies the extracted audit log files, oldest first, against
// the backed-up audit key, up to the recorded head. When chain checked
// exactly those files as they were extracted, its result stands for
// reading them again.
func checkAudit(dir string, m *Manifest, chain *auditStream) (*audit.Report, error) {
	var paths []string
	for _, mb := range m.Members {
		if mb.Kind == KindAudit {
			paths = append(paths, filepath.Join(dir, filepath.FromSlash(mb.Name)))
		}
	}
	if len(paths) == 0 {
		if m.AuditHead.Seq >= 0 && m.AuditHead.LineSHA256 != "" {
			return nil, verificationf("the manifest records audit head seq %d but holds no audit log", m.AuditHead.Seq)
		}
		return nil, nil
	}
	o := audit.VerifyOptions{Live: true}
	if data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(auditPubMember))); err == nil {
		keys, err := manifests.ParsePublicKeys(data)
		if err != nil {
			return nil, verificationf("%s: %v", auditPubMember, err)
		}
		o.Trusted = keys
	}
	rep, streamed, err := chain.result(dir, m, paths)
	if !streamed {
		for _, p := range paths {
			if _, err := os.Lstat(p); err != nil {
				// Not written (keepChecked) on the belief that the stream
				// checks it, and the manifest says otherwise.
				return nil, verificationf("the audit log members the manifest lists are not the ones named like an audit log, in order, as backup create writes them")
			}
		}
		rep, err = audit.Verify(paths, o)
	}
	if err != nil {
		if errors.Is(err, audit.ErrTampered) {
			return rep, verificationf("audit log: %v", err)
		}
		return rep, err
	}
	if rep.LastSeq != m.AuditHead.Seq {
		return rep, verificationf("audit log ends at seq %d; the manifest records head seq %d", rep.LastSeq, m.AuditHead.Seq)
	}
	if filepath.Join(dir, filepath.FromSlash(m.AuditHead.Member)) != paths[len(paths)-1] {
		return rep, verificationf("audit head member %q is not the last audit file", m.AuditHead.Member)
	}
	if rep.LastLineSHA256 != m.AuditHead.LineSHA256 {
		return rep, verificationf("audit log's last line hashes to %s; the manifest records %s", rep.LastLineSHA256, m.AuditHead.LineSHA256)
	}
	return rep, nil
}

// KBExtra is the name the knowledge base's snapshot is added under
// (Options.Extra); KBMember is its member name in the archive.
const (
	KBExtra  = "kb.db"
	KBMember = "extra/" + KBExtra
)

// kbSnapshot is the extracted knowledge-base snapshot in dir, or "" when
// the archive holds none.
func kbSnapshot(dir string, m *Manifest) string {
	for _, mb := range m.Members {
		if mb.Name == KBMember && mb.Kind == KindExtra {
			return filepath.Join(dir, filepath.FromSlash(mb.Name))
		}
	}
	return ""
}

// checkKB runs check on the archive's knowledge-base snapshot, returning
// what the report says about it; a failure matches ErrVerification.
func checkKB(ctx context.Context, dir string, m *Manifest, check func(context.Context, string) error) (string, error) {
	p := kbSnapshot(dir, m)
	switch {
	case p == "":
		return "", nil
	case check == nil:
		return "not checked", nil
	}
	if err := check(ctx, p); err != nil {
		return "", verificationf("knowledge base snapshot %s: %v", KBMember, err)
	}
	return "integrity and content hashes ok", nil
}
