package storage

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
)

// MetadataSuffix is appended to the store directory's path to name the file
// that holds the wrapped keys; it sits beside the store, outside the
// encrypted tree, so it can be read while the store is locked.
const MetadataSuffix = ".storage.json"

// metadataVersion is the schema of the metadata file.
const metadataVersion = 1

// maxMetadataBytes bounds what is read from the metadata file.
const maxMetadataBytes = 1 << 20

// MetadataPath returns where the metadata of the store at dir lives.
func MetadataPath(dir string) string {
	return filepath.Clean(dir) + MetadataSuffix
}

// Metadata describes a store and holds its wrapped keys. It is root's, mode
// 0600, and written atomically.
type Metadata struct {
	SchemaVersion int          `json:"schemaVersion"`
	Backend       Backend      `json:"backend"`
	ID            string       `json:"id"` // random, binds wrapped keys to this store
	Created       time.Time    `json:"created"`
	Owner         Owner        `json:"owner"`
	Guest         *Guest       `json:"guest,omitempty"` // another account's directory in the store (the knowledge base)
	Fscrypt       *FscryptInfo `json:"fscrypt,omitempty"`
	LUKS          *LUKSInfo    `json:"luks,omitempty"`
	Protectors    []Protector  `json:"protectors"`
}

// Owner is the account that owns the store's files.
type Owner struct {
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Name string `json:"name,omitempty"`
}

// FscryptInfo is the policy an fscrypt store was created with.
type FscryptInfo struct {
	PolicyVersion int    `json:"policyVersion"`
	Contents      string `json:"contents"`  // AES-256-XTS
	Filenames     string `json:"filenames"` // AES-256-CTS
	Padding       int    `json:"padding"`   // file name padding in bytes
	KeyIdentifier string `json:"keyIdentifier"`
}

// LUKSInfo is where a LUKS store's volume is and how it is opened.
type LUKSInfo struct {
	Volume     string `json:"volume"`     // block device or file holding the LUKS2 volume
	MapperName string `json:"mapperName"` // /dev/mapper name while open
	FSType     string `json:"fsType"`     // filesystem made inside the volume
}

// Protector is one way to unlock the store. For fscrypt it holds the master
// key wrapped in AES-256-GCM; for LUKS the key slot that the credential opens.
type Protector struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	KDF        *KDF      `json:"kdf,omitempty"` // argon2id cost, passphrases only
	Salt       []byte    `json:"salt,omitempty"`
	Nonce      []byte    `json:"nonce,omitempty"`
	WrappedKey []byte    `json:"wrappedKey,omitempty"`
	KeySlot    *int      `json:"keySlot,omitempty"`
	Created    time.Time `json:"created"`
	// FscryptProtector is the descriptor (16 hex digits, like our IDs) of
	// the fscrypt tool's raw-key protector that wraps the same master key
	// with this recovery key, so Debian's `fscrypt unlock` opens the store
	// without this program.
	FscryptProtector string `json:"fscryptProtector,omitempty"`
}

var idRE = regexp.MustCompile(`^[0-9a-f]{16}$`)

func newID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// parseMetadata decodes a metadata file strictly and checks every field.
func parseMetadata(data []byte) (*Metadata, error) {
	var m Metadata
	if err := jsonstrict.Decode(data, &m); err != nil {
		return nil, fmt.Errorf("parse store metadata: %w", err)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("parse store metadata: %w", err)
	}
	return &m, nil
}

func (m *Metadata) validate() error {
	if m.SchemaVersion != metadataVersion {
		return fmt.Errorf("schemaVersion: %d is not supported (want %d)", m.SchemaVersion, metadataVersion)
	}
	if !idRE.MatchString(m.ID) {
		return errors.New("id: not 16 lower-case hex digits")
	}
	if m.Owner.UID < 0 || m.Owner.GID < 0 {
		return errors.New("owner: negative uid or gid")
	}
	if err := m.Guest.validate(m.Owner); err != nil {
		return fmt.Errorf("guest: %w", err)
	}
	switch m.Backend {
	case BackendFscrypt:
		f := m.Fscrypt
		if f == nil || m.LUKS != nil {
			return errors.New("fscrypt: missing, or luks given for an fscrypt store")
		}
		if f.PolicyVersion != 2 || f.Contents != "AES-256-XTS" || f.Filenames != "AES-256-CTS" {
			return fmt.Errorf("fscrypt: policy v%d %s/%s is not the v2 AES-256-XTS/AES-256-CTS policy", f.PolicyVersion, f.Contents, f.Filenames)
		}
		switch f.Padding {
		case 4, 8, 16, 32:
		default:
			return fmt.Errorf("fscrypt.padding: %d is not 4, 8, 16 or 32", f.Padding)
		}
		if b, err := hex.DecodeString(f.KeyIdentifier); err != nil || len(b) != 16 {
			return errors.New("fscrypt.keyIdentifier: not 32 hex digits")
		}
	case BackendLUKS:
		l := m.LUKS
		if l == nil || m.Fscrypt != nil {
			return errors.New("luks: missing, or fscrypt given for a LUKS store")
		}
		if !filepath.IsAbs(l.Volume) {
			return fmt.Errorf("luks.volume: %q is not an absolute path", l.Volume)
		}
		if !mapperRE.MatchString(l.MapperName) {
			return fmt.Errorf("luks.mapperName: %q is not a device-mapper name this tool makes", l.MapperName)
		}
		if l.FSType != "ext4" {
			return fmt.Errorf("luks.fsType: %q is not ext4", l.FSType)
		}
	default:
		return fmt.Errorf("backend: %q is not fscrypt or luks", m.Backend)
	}
	if len(m.Protectors) == 0 {
		return errors.New("protectors: none")
	}
	seen := map[string]bool{}
	for i, p := range m.Protectors {
		where := fmt.Sprintf("protectors[%d]", i)
		if !idRE.MatchString(p.ID) || seen[p.ID] {
			return fmt.Errorf("%s.id: missing, malformed or repeated", where)
		}
		seen[p.ID] = true
		switch p.Kind {
		case kindKeyFile, kindRecovery, kindPassphrase:
		default:
			return fmt.Errorf("%s.kind: %q is not key-file, passphrase or recovery", where, p.Kind)
		}
		if p.FscryptProtector != "" && (m.Backend != BackendFscrypt || p.Kind != kindRecovery || !idRE.MatchString(p.FscryptProtector)) {
			return fmt.Errorf("%s.fscryptProtector: only an fscrypt recovery protector has one, of 16 hex digits", where)
		}
		if m.Backend == BackendLUKS {
			if p.KeySlot == nil || *p.KeySlot < 0 || *p.KeySlot > 31 {
				return fmt.Errorf("%s.keySlot: missing or not between 0 and 31", where)
			}
			continue
		}
		if p.Kind == kindPassphrase {
			if p.KDF == nil {
				return fmt.Errorf("%s.kdf: a passphrase protector needs argon2id parameters", where)
			}
			if err := p.KDF.Validate(); err != nil {
				return fmt.Errorf("%s.kdf: %w", where, err)
			}
		}
		if len(p.Salt) != 32 || len(p.Nonce) != 12 || len(p.WrappedKey) != fscryptKeySize+16 {
			return fmt.Errorf("%s: salt, nonce or wrapped key has the wrong length", where)
		}
	}
	return nil
}

// readMetadata loads the metadata of the store at dir, refusing a file that
// others could read or change.
func readMetadata(dir string) (*Metadata, error) {
	path := MetadataPath(dir)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s (%s is missing)", ErrNoStore, dir, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read store metadata: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read store metadata: %w", err)
	}
	if p := metadataPermProblem(path, st); p != nil {
		return nil, &PermissionError{Problems: []PermissionProblem{*p}}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read store metadata %s: %w", path, err)
	}
	if len(data) > maxMetadataBytes {
		return nil, fmt.Errorf("read store metadata %s: larger than %d bytes", path, maxMetadataBytes)
	}
	m, err := parseMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// writeMetadata replaces the metadata file atomically with mode 0600.
func writeMetadata(dir string, m *Metadata) error {
	if err := m.validate(); err != nil {
		return fmt.Errorf("write store metadata: %w", err)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("write store metadata: %w", err)
	}
	// Each version holds wrapped keys: the one replaced is overwritten, so
	// that rotate-key and remove-protector leave no old wrapped key in free
	// blocks for erase to miss where the disk cannot discard them.
	if err := atomicfile.WriteFileShredding(MetadataPath(dir), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write store metadata: %w", err)
	}
	return nil
}

// destroyMetadata overwrites the metadata file with random bytes, syncs,
// and removes it. On flash and journaling filesystems old copies of the
// blocks may survive the overwrite; see SECURITY.md.
func destroyMetadata(dir string) error {
	path := MetadataPath(dir)
	if err := atomicfile.Shred(path); err != nil {
		return fmt.Errorf("erase store metadata %s: %w", path, err)
	}
	return nil
}

// aad binds a wrapped key to its store and protector.
func (m *Metadata) aad(p *Protector) []byte {
	return []byte("qwen-appliance storage v1|" + m.ID + "|" + p.ID + "|" + p.Kind)
}

// addProtector wraps key for cred and appends the protector.
func (m *Metadata) addProtector(cred Credential, key []byte, kdf KDF, now time.Time) error {
	secret, err := cred.secret()
	if err != nil {
		return err
	}
	defer clear(secret)
	p := Protector{ID: newID(), Kind: cred.kind(), Salt: make([]byte, 32), Created: now.UTC().Truncate(time.Second)}
	rand.Read(p.Salt)
	if p.Kind == kindPassphrase {
		k := kdf
		p.KDF = &k
	}
	kek, err := wrappingKey(p.Kind, secret, p.Salt, p.KDF)
	if err != nil {
		return err
	}
	defer clear(kek)
	p.Nonce, p.WrappedKey, err = seal(kek, key, m.aad(&p))
	if err != nil {
		return err
	}
	m.Protectors = append(m.Protectors, p)
	return nil
}

// unwrap returns the master key and the index of the protector that cred
// opened, or ErrWrongKey.
func (m *Metadata) unwrap(cred Credential) ([]byte, int, error) {
	secret, err := cred.secret()
	if err != nil {
		return nil, -1, err
	}
	defer clear(secret)
	tried := 0
	for i := range m.Protectors {
		p := &m.Protectors[i]
		if p.Kind != cred.kind() {
			continue
		}
		tried++
		kek, err := wrappingKey(p.Kind, secret, p.Salt, p.KDF)
		if err != nil {
			return nil, -1, err
		}
		key, err := open(kek, p.Nonce, p.WrappedKey, m.aad(p))
		clear(kek)
		if err == nil {
			return key, i, nil
		}
	}
	if tried == 0 {
		return nil, -1, fmt.Errorf("%w: the store has no %s protector", ErrWrongKey, cred.kind())
	}
	return nil, -1, fmt.Errorf("%w: the %s opens none of its %d %s protector(s)", ErrWrongKey, cred, tried, cred.kind())
}
