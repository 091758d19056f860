package backup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// VerifyOptions say which archive to check and with what.
type VerifyOptions struct {
	File       string
	Identities []age.Identity
	Trusted    []manifests.PublicKey // keys the backup manifest must be signed by
	// Drill also checks that the restored configuration would work: the
	// token file loads, the TLS server certificate chains to the CA and
	// matches its key, the audit key pair matches.
	Drill   bool
	Scratch string // where to extract (a private temporary directory inside it); os.TempDir() when empty
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

// Check is one drill check.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Verify decrypts and checks the archive in a private scratch directory
// that it removes afterwards. Errors match ErrVerification when the archive
// or its audit log fails a check (ErrIdentity for a wrong identity).
func Verify(ctx context.Context, o VerifyOptions) (*Report, error) {
	dir, err := os.MkdirTemp(o.Scratch, "qwen-backup-verify-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rep, err := open(ctx, o.File, o.Identities, o.Trusted, dir)
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
		rep.Drill = drill(dir, o.Now())
		for _, c := range rep.Drill {
			if !c.OK {
				return rep, verificationf("drill: %s: %s", c.Name, c.Detail)
			}
		}
	}
	return rep, nil
}

// open extracts and checks the archive into dir, then checks its audit log.
func open(ctx context.Context, file string, ids []age.Identity, trusted []manifests.PublicKey, dir string) (*Report, error) {
	rep := &Report{File: file}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	chain := &auditStream{dir: dir}
	defer chain.stop()
	m, err := extract(ctx, f, ids, trusted, dir, chain)
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
	rep, err, streamed := chain.result(dir, m, paths)
	if !streamed {
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
	sum, err := lastLineHash(paths[len(paths)-1])
	if err != nil {
		return rep, err
	}
	if sum != m.AuditHead.LineSHA256 {
		return rep, verificationf("audit log's last line hashes to %s; the manifest records %s", sum, m.AuditHead.LineSHA256)
	}
	return rep, nil
}

// drill checks that the backed-up configuration would serve.
func drill(dir string, now time.Time) []Check {
	cfg := filepath.Join(dir, "root", "etc", "qwen-appliance")
	var out []Check
	add := func(name string, err error, ok string) {
		c := Check{Name: name, OK: err == nil, Detail: ok}
		if err != nil {
			c.Detail = err.Error()
		}
		out = append(out, c)
	}
	st, err := tokens.Load(filepath.Join(cfg, "tokens.json"))
	detail := ""
	if err == nil {
		n := 0
		for _, t := range st.Tokens {
			if t.State(now) == "active" {
				n++
			}
		}
		if n == 0 {
			err = errors.New("no active token: no client could authenticate after a restore")
		}
		detail = fmt.Sprintf("%d tokens, %d active", len(st.Tokens), n)
	}
	add("tokens", err, detail)

	tlsDir := filepath.Join(cfg, "tls")
	ca, _, err := certs.LoadCA(tlsDir)
	detail = ""
	if err == nil {
		var pair tls.Certificate
		pair, err = tls.LoadX509KeyPair(filepath.Join(tlsDir, "server.crt"), filepath.Join(tlsDir, "server.key"))
		if err == nil {
			leaf := pair.Leaf
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now})
			detail = fmt.Sprintf("server certificate valid until %s, CA until %s", leaf.NotAfter.UTC().Format(time.DateOnly), ca.NotAfter.UTC().Format(time.DateOnly))
		}
	}
	add("tls", err, detail)

	k, err := manifests.LoadPrivateKey(filepath.Join(cfg, "audit.key"))
	detail = ""
	if err == nil {
		var pubs []manifests.PublicKey
		pubs, err = manifests.LoadPublicKeys(filepath.Join(cfg, "audit.pub"))
		if err == nil && (len(pubs) != 1 || pubs[0].ID != k.ID) {
			err = fmt.Errorf("audit.key (%s) and audit.pub do not match", k.ID)
		}
		detail = "audit key " + k.ID
	}
	add("audit-key", err, detail)
	return out
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
