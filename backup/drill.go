package backup

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/audit"
	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
	"github.com/qwen-appliance/qwen-appliance/gateway/tokens"
	"github.com/qwen-appliance/qwen-appliance/harden"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

// drill restores the verified members in stage into the scratch root and
// checks what it restored. A check fails (OK false) when the restored tree
// would not serve; checks that need the running host are not applicable.
func drill(ctx context.Context, stage, root string, m *Manifest, o VerifyOptions) []Check {
	st, n, err := restoreScratch(stage, root, m, o.File)
	if err != nil {
		return []Check{check("restore", "", err)}
	}
	detail := fmt.Sprintf("%d files into a scratch root (no service identity, install or running services)", n)
	if st == nil {
		detail += "; the backup holds no install record"
	}
	out := []Check{check("restore", detail, nil)}
	now := o.Now()
	cfg := filepath.Join(root, provision.ConfigDir)
	out = append(out, drillTokens(cfg, now), drillTLS(cfg, now), drillAuditKey(cfg))
	if m.AuditHead.Member != "" {
		out = append(out, drillAuditChain(root, m))
	}
	if c, ok := drillHarden(root, st); ok {
		out = append(out, c)
	}
	if o.HostChecks != nil && st != nil {
		out = append(out, o.HostChecks(ctx, root, st, m)...)
	}
	return out
}

// restoreScratch puts the archive back under root with Restore's own
// steps (placeFile, restoreAudit and its restore record), less those that
// change the host, and also what Restore leaves to install (the install
// record, units and rules, the store's metadata, the installed bundle's
// manifest, the knowledge base), so that verify's checks can read them.
// It returns the install record with its paths moved under root (nil when
// the backup has none) and how many files it placed.
func restoreScratch(stage, root string, m *Manifest, file string) (*state.State, int, error) {
	n := 0
	place := func(mb Member, dst string) error {
		if err := placeFile(filepath.Join(stage, filepath.FromSlash(mb.Name)), dst, os.FileMode(mb.Mode), false); err != nil {
			return fmt.Errorf("restore %s: %w", mb.Name, err)
		}
		n++
		return nil
	}
	for _, mb := range m.Members {
		if mb.Kind == KindConfig || mb.Kind == KindState {
			if err := place(mb, rootPath(root, mb.Name)); err != nil {
				return nil, n, err
			}
		}
	}
	if err := restoreAudit(root, stage, m, recordName(file, m), nil); err != nil {
		return nil, n, fmt.Errorf("restore the audit log: %w", err)
	}
	for _, mb := range m.Members {
		if mb.Kind == KindAudit {
			n++
		}
	}
	st, err := state.Load(root)
	if errors.Is(err, state.ErrNotInstalled) {
		return nil, n, nil
	}
	if err != nil {
		return nil, n, fmt.Errorf("the backed-up install record: %w", err)
	}
	st = rebase(st, m.Root, root)
	for _, mb := range m.Members {
		var dst string
		switch {
		case mb.Kind == KindStore && st.Store.Dir != "":
			dst = storage.MetadataPath(st.Store.Dir)
		case (mb.Kind == KindBundle || mb.Kind == KindModel) && st.Bundle.Dir != "":
			dst = filepath.Join(st.Bundle.Dir, filepath.FromSlash(strings.TrimPrefix(mb.Name, "bundle/")))
		case mb.Kind == KindExtra && mb.Name == KBMember && st.Store.Dir != "":
			dst = provision.KBPath(st.Store.Dir)
		default:
			continue
		}
		if err := place(mb, dst); err != nil {
			return nil, n, err
		}
	}
	return st, n, nil
}

// rebase returns a copy of st whose paths (the ones verify's offline checks
// read) lie under root instead of from, where the install was. The
// program itself is not in a backup (install copies it again), so it is
// left out of the recorded files.
func rebase(st *state.State, from, root string) *state.State {
	mv := func(p string) string {
		if p == "" {
			return ""
		}
		if rel, err := filepath.Rel(from, p); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return filepath.Join(root, rel)
		}
		return filepath.Join(root, "outside-root", p)
	}
	c := *st
	c.Root = root
	c.Bundle.Dir = mv(st.Bundle.Dir)
	c.Store.Dir, c.Store.KeyFile = mv(st.Store.Dir), mv(st.Store.KeyFile)
	c.Firewall.RulesFile = mv(st.Firewall.RulesFile)
	c.TrustedKeys = nil
	for _, k := range st.TrustedKeys {
		c.TrustedKeys = append(c.TrustedKeys, mv(k))
	}
	c.Files = map[string]string{}
	for p, sum := range st.Files {
		if p != filepath.Join(from, provision.ProgramPath) {
			c.Files[mv(p)] = sum
		}
	}
	g := &c.Gateway
	g.AuditLog, g.AuditKey, g.TokensFile, g.CACert = mv(g.AuditLog), mv(g.AuditKey), mv(g.TokensFile), mv(g.CACert)
	g.AuditSigningKey, g.TLSKey = mv(g.AuditSigningKey), mv(g.TLSKey)
	return &c
}

func drillTokens(cfg string, now time.Time) Check {
	st, err := tokens.Load(filepath.Join(cfg, "tokens.json"))
	if err != nil {
		return check("tokens", "", err)
	}
	n := 0
	for _, t := range st.Tokens {
		if t.State(now) == "active" {
			n++
		}
	}
	if n == 0 {
		err = errors.New("no active token: no client could authenticate after a restore")
	}
	return check("tokens", fmt.Sprintf("%d tokens, %d active", len(st.Tokens), n), err)
}

func drillTLS(cfg string, now time.Time) Check {
	tlsDir := filepath.Join(cfg, "tls")
	ca, _, err := certs.LoadCA(tlsDir)
	if err != nil {
		return check("tls", "", err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(tlsDir, "server.crt"), filepath.Join(tlsDir, "server.key"))
	if err != nil {
		return check("tls", "", err)
	}
	leaf := pair.Leaf
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now})
	return check("tls", fmt.Sprintf("server certificate valid until %s, CA until %s", leaf.NotAfter.UTC().Format(time.DateOnly), ca.NotAfter.UTC().Format(time.DateOnly)), err)
}

func drillAuditKey(cfg string) Check {
	k, err := manifests.LoadPrivateKey(filepath.Join(cfg, "audit.key"))
	if err != nil {
		return check("audit-key", "", err)
	}
	pubs, err := manifests.LoadPublicKeys(filepath.Join(cfg, "audit.pub"))
	if err == nil && (len(pubs) != 1 || pubs[0].ID != k.ID) {
		err = fmt.Errorf("audit.key (%s) and audit.pub do not match", k.ID)
	}
	return check("audit-key", "audit key "+k.ID, err)
}

// drillAuditChain verifies what the restore appended to the restored log
// (its restore record) against the restored audit.pub, from the backed-up
// head on: the chain continues. The part before it is the member verify
// checked, moved into place within the private scratch directory.
func drillAuditChain(root string, m *Manifest) Check {
	keys, err := manifests.LoadPublicKeys(filepath.Join(root, provision.ConfigDir, "audit.pub"))
	if err != nil {
		return check("audit-chain", "", err)
	}
	var size int64
	for _, mb := range m.Members {
		if mb.Name == m.AuditHead.Member {
			size = mb.Size
		}
	}
	p := rootPath(root, m.AuditHead.Member)
	f, err := os.Open(p)
	if err != nil {
		return check("audit-chain", "", err)
	}
	defer f.Close()
	if _, err := f.Seek(size, io.SeekStart); err != nil {
		return check("audit-chain", "", err)
	}
	rep, err := audit.VerifyReader(p, f, audit.VerifyOptions{Trusted: keys, Live: true,
		From: &audit.Head{Seq: m.AuditHead.Seq, Hash: m.AuditHead.LineSHA256}})
	if err != nil {
		return check("audit-chain", "", err)
	}
	// What was appended is a few lines.
	tail, err := io.ReadAll(io.NewSectionReader(f, size, 16<<20))
	if err != nil {
		return check("audit-chain", "", err)
	}
	if !strings.Contains(string(tail), `"kind":"`+audit.KindRestore+`"`) {
		return check("audit-chain", "", fmt.Errorf("the restored log has no restore record after head seq %d", m.AuditHead.Seq))
	}
	return check("audit-chain", fmt.Sprintf("%d lines appended after head seq %d, restore record included, continue the chain, signed by audit.pub", rep.Lines, m.AuditHead.Seq), nil)
}

// check is a drill check that passed with detail, or failed with err.
func check(name, detail string, err error) Check {
	if err != nil {
		return Check{Name: name, Status: Fail, Detail: err.Error()}
	}
	return Check{Name: name, OK: true, Status: Pass, Detail: detail}
}

// drillHarden checks that the restored harden record's policy renders to
// the rules file restored beside it, as install recorded; ok is false when
// the backup holds no harden record.
func drillHarden(root string, st *state.State) (Check, bool) {
	rec, err := harden.LoadRecord(harden.Root(root))
	if errors.Is(err, harden.ErrNotApplied) {
		return Check{}, false
	}
	c := Check{Name: "harden", OK: true, Status: Pass}
	if err == nil {
		var data []byte
		data, err = os.ReadFile(harden.Root(root).Path(harden.RulesPath))
		sum := sha256.Sum256(data)
		switch {
		case err != nil:
		case harden.Build(rec.Policy).Hash() != rec.SHA256:
			err = fmt.Errorf("the harden record's policy renders to rules %.12s, not the recorded %.12s", harden.Build(rec.Policy).Hash(), rec.SHA256)
		case hex.EncodeToString(sum[:]) != rec.SHA256:
			err = fmt.Errorf("%s hashes to %.12s; the harden record says %.12s", harden.RulesPath, hex.EncodeToString(sum[:]), rec.SHA256)
		case st != nil && st.Firewall.RulesetSHA256 != "" && st.Firewall.RulesetSHA256 != rec.SHA256:
			err = fmt.Errorf("the install record's ruleset %.12s is not the harden record's %.12s", st.Firewall.RulesetSHA256, rec.SHA256)
		}
	}
	if err != nil {
		c.OK, c.Status, c.Detail = false, Fail, err.Error()
	} else {
		c.Detail = fmt.Sprintf("rules %.12s rendered from the recorded policy, as install recorded", rec.SHA256)
	}
	return c, true
}
