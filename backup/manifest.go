package backup

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// SchemaVersion of the inner manifest.
const SchemaVersion = 1

// Purpose is the signature purpose of a backup manifest, so that its
// signature can never pass for a bundle manifest's or the other way round.
const Purpose = "backup-manifest"

// PurposeDrill is the signature purpose of a drill report (backup verify
// --report).
const PurposeDrill = "backup-drill"

// Names of the archive's last two members.
const (
	ManifestName  = "BACKUP-MANIFEST.json"
	SignatureName = "BACKUP-MANIFEST.sig"
)

// Member kinds: what a member is for, and so what restore does with it.
const (
	KindConfig = "config" // ROOT/etc/qwen-appliance: tokens, TLS CA and keys, audit and store keys; restored
	KindAudit  = "audit"  // the audit log and its rotated files; restored, then continued
	KindState  = "state"  // install state, harden record, unit and rules files; kept for the record
	KindStore  = "store"  // store metadata and protectors; kept for the record
	KindBundle = "bundle" // the installed bundle's manifest and signature
	KindModel  = "model"  // the bundle's other files, with --include-model
	KindExtra  = "extra"  // members added through Options.Extra (the KB database)
)

// Manifest is the signed list of what a backup holds.
type Manifest struct {
	SchemaVersion int       `json:"schemaVersion"`
	Created       time.Time `json:"created"`
	Tool          string    `json:"tool,omitempty"`
	Host          string    `json:"host,omitempty"`
	Root          string    `json:"root"`
	Bundle        Bundle    `json:"bundle"`
	Store         string    `json:"store,omitempty"` // the store directory the backup was taken from
	AuditHead     AuditHead `json:"auditHead"`
	IncludesModel bool      `json:"includesModel"`
	Members       []Member  `json:"members"`
}

// Bundle names the installed bundle at backup time.
type Bundle struct {
	Name           string `json:"name"`
	Version        uint64 `json:"version"`
	ManifestSHA256 string `json:"manifestSha256"`
}

// AuditHead is the last audit line the backup holds: restore continues the
// chain from here.
type AuditHead struct {
	Member     string `json:"member"` // the archive member holding the line (the current log)
	Seq        int64  `json:"seq"`
	LineSHA256 string `json:"lineSha256"` // the chain hash of that line (the next line's prev)
}

// Member is one file in the archive.
type Member struct {
	Name   string `json:"name"` // slash-separated, relative; "root/…" mirrors ROOT
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	Mode   uint32 `json:"mode"` // permission bits
	SHA256 string `json:"sha256"`
}

// Marshal encodes m canonically (the bytes that are signed).
func Marshal(m *Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse decodes a manifest strictly and checks its member names.
func Parse(data []byte) (*Manifest, error) {
	var m Manifest
	if err := jsonstrict.Decode(data, &m); err != nil {
		return nil, fmt.Errorf("parse backup manifest: %w", err)
	}
	if m.SchemaVersion != SchemaVersion {
		return nil, fmt.Errorf("parse backup manifest: schemaVersion %d is not supported (want %d)", m.SchemaVersion, SchemaVersion)
	}
	seen := map[string]bool{}
	for i, mb := range m.Members {
		if err := manifests.ValidatePath(mb.Name); err != nil {
			return nil, fmt.Errorf("parse backup manifest: members[%d] %q: %v", i, mb.Name, err)
		}
		if mb.Name == ManifestName || mb.Name == SignatureName || seen[mb.Name] {
			return nil, fmt.Errorf("parse backup manifest: members[%d] %q is listed twice or reserved", i, mb.Name)
		}
		if mb.Size < 0 || len(mb.SHA256) != 64 || mb.Mode&^0o7777 != 0 {
			return nil, fmt.Errorf("parse backup manifest: members[%d] %q: bad size, mode or sha256", i, mb.Name)
		}
		seen[mb.Name] = true
	}
	return &m, nil
}

// Sign returns the signature file for raw manifest bytes.
func Sign(raw []byte, k manifests.PrivateKey) []byte {
	var s manifests.Signatures
	s.Add(manifests.Sign(k, Purpose, raw))
	return s.Marshal()
}
