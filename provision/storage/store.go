package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Backend names how a store is encrypted.
type Backend string

// Backends.
const (
	// BackendFscrypt encrypts one directory tree with a kernel fscrypt v2
	// policy; the filesystem (ext4, f2fs) must support it.
	BackendFscrypt Backend = "fscrypt"
	// BackendLUKS encrypts a whole block device or file-backed volume with
	// LUKS2 and mounts an ext4 filesystem from it at the store directory.
	BackendLUKS Backend = "luks"
)

// ParseBackend accepts "fscrypt" or "luks".
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case BackendFscrypt, BackendLUKS:
		return b, nil
	}
	return "", fmt.Errorf("backend %q is not fscrypt or luks", s)
}

// fscryptKeySize is the master key length: 64 bytes, as AES-256-XTS needs
// two 256-bit keys.
const fscryptKeySize = 64

// backend is what fscrypt and LUKS each do for a store.
type backend interface {
	// create encrypts an empty store at s.Dir and fills s.Meta's backend part
	// and protectors, one per credential.
	create(ctx context.Context, s *ModelStore, opts InitOptions, creds []Credential) error
	unlock(ctx context.Context, s *ModelStore, cred Credential) error
	lock(ctx context.Context, s *ModelStore) error
	status(ctx context.Context, s *ModelStore, st *Status) error
	// rotate replaces the protector that old opens with one for new.
	rotate(ctx context.Context, s *ModelStore, old, new Credential, kdf KDF) error
	// erase destroys the key material; the metadata file is removed after.
	erase(ctx context.Context, s *ModelStore) error
}

// ModelStore is an encrypted directory that holds model files.
type ModelStore struct {
	Dir  string
	Meta *Metadata
	b    backend
	// trimmed records that erase discarded the filesystem's free blocks.
	trimmed bool
}

// Options are the seams and costs shared by every operation.
type Options struct {
	KDF        KDF            // argon2id cost for new passphrase protectors and LUKS key slots; DefaultKDF when zero
	cryptsetup cryptsetupTool // the LUKS tool; the cryptsetup binary when nil
	Now        func() time.Time
	kernel     fscryptKernel // the fscrypt ioctls; the real kernel when nil
	// toolMount finds the mount point whose root holds the fscrypt tool's
	// .fscrypt directory for a store; fscryptmeta.FindMount when nil.
	toolMount func(dir string) (string, error)
}

func (o Options) kdf() KDF {
	if o.KDF == (KDF{}) {
		return DefaultKDF
	}
	return o.KDF
}

func (o Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

// InitOptions say how to create a store.
type InitOptions struct {
	Options
	Dir         string
	Backend     Backend
	Owner       Owner
	Credentials []Credential // at least one; a recovery key is always added
	// Volume is the LUKS block device or file; a missing file is created
	// with VolumeSize bytes.
	Volume     string
	VolumeSize int64
}

// Init creates an encrypted store at opts.Dir, owned by opts.Owner with the
// strict modes, protected by each credential and by a new recovery key,
// which it returns: that is the only time the recovery key is shown. The
// store is left unlocked. It returns ErrExists when a store or other data
// is already there, a *NotEncryptableError when the filesystem cannot hold
// an fscrypt store, and ErrNoDeviceMapper when a LUKS volume was formatted
// but cannot be opened on this kernel; with that error the store and its
// recovery key are returned too, as the store exists.
func Init(ctx context.Context, opts InitOptions) (s *ModelStore, recoveryKey string, err error) {
	if len(opts.Credentials) == 0 {
		return nil, "", errors.New("init store: no key file or passphrase given")
	}
	for _, c := range opts.Credentials {
		if c.kind() == "" || c.kind() == kindRecovery {
			return nil, "", fmt.Errorf("init store: %s cannot protect a new store (a recovery key is made for it)", c)
		}
	}
	if err := opts.kdf().Validate(); err != nil {
		return nil, "", fmt.Errorf("init store: %w", err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, "", fmt.Errorf("init store: %w", err)
	}
	if _, err := os.Lstat(MetadataPath(dir)); err == nil {
		return nil, "", fmt.Errorf("init store: %w: %s exists", ErrExists, MetadataPath(dir))
	}
	if err := emptyOrMissing(dir); err != nil {
		return nil, "", fmt.Errorf("init store: %w", err)
	}
	if opts.Backend == "" {
		opts.Backend = BackendFscrypt
	}
	b, err := newBackend(opts.Backend, opts.Options)
	if err != nil {
		return nil, "", fmt.Errorf("init store: %w", err)
	}
	s = &ModelStore{Dir: dir, b: b, Meta: &Metadata{
		SchemaVersion: metadataVersion,
		Backend:       opts.Backend,
		ID:            newID(),
		Created:       opts.now().UTC().Truncate(time.Second),
		Owner:         opts.Owner,
	}}
	recoveryKey = newRecoveryKey()
	creds := append(append([]Credential(nil), opts.Credentials...), Credential{RecoveryKey: recoveryKey})
	if err := b.create(ctx, s, opts, creds); err != nil {
		if _, serr := os.Lstat(MetadataPath(dir)); serr == nil {
			// The store exists (a LUKS volume formatted where it cannot be
			// opened): its recovery key must still reach the operator.
			return s, recoveryKey, fmt.Errorf("init store %s: %w", dir, err)
		}
		return nil, "", fmt.Errorf("init store %s: %w", dir, err)
	}
	return s, recoveryKey, nil
}

// emptyOrMissing refuses a path that exists and is not an empty directory.
func emptyOrMissing(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is a %s", ErrExists, dir, typeName(fi.Mode()))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: %s is not empty (%d entries)", ErrExists, dir, len(entries))
	}
	return nil
}

// Open reads the metadata of the store at dir. It returns an error matching
// ErrNoStore when there is none, and a *PermissionError when the metadata
// file is not private to root.
func Open(dir string, opts Options) (*ModelStore, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	m, err := readMetadata(dir)
	if err != nil {
		return nil, err
	}
	b, err := newBackend(m.Backend, opts)
	if err != nil {
		return nil, err
	}
	return &ModelStore{Dir: dir, Meta: m, b: b}, nil
}

// Unlock makes the store readable with cred after checking that its
// permissions are strict. It returns an error matching ErrWrongKey when cred
// opens no protector, and a *PermissionError naming each loose entry.
func (s *ModelStore) Unlock(ctx context.Context, cred Credential) error {
	if err := s.checkPermissions(); err != nil {
		return fmt.Errorf("unlock %s: %w", s.Dir, err)
	}
	if err := s.b.unlock(ctx, s, cred); err != nil {
		return fmt.Errorf("unlock %s: %w", s.Dir, err)
	}
	return nil
}

// checkPermissions applies checkTree where the tree is reachable (a
// closed LUKS volume has nothing mounted to check).
func (s *ModelStore) checkPermissions() error {
	if _, err := os.Lstat(s.Dir); errors.Is(err, fs.ErrNotExist) && s.Meta.Backend == BackendLUKS {
		return nil
	}
	return checkTree(s.Dir, s.Meta.Owner, s.Meta.Guest)
}

// Lock removes the key: fscrypt file names turn back into ciphertext and
// contents become unreadable; a LUKS volume is unmounted and closed. It
// returns a *BusyError when open files keep parts of an fscrypt store
// readable.
func (s *ModelStore) Lock(ctx context.Context) error {
	if err := s.b.lock(ctx, s); err != nil {
		return fmt.Errorf("lock %s: %w", s.Dir, err)
	}
	return nil
}

// Status describes a store for operators and auditors.
type Status struct {
	Dir         string              `json:"dir"`
	Backend     Backend             `json:"backend"`
	ID          string              `json:"id"`
	Metadata    string              `json:"metadata"`
	Cipher      string              `json:"cipher"` // contents/filenames, or the LUKS segment cipher
	KeyBits     int                 `json:"keyBits"`
	Policy      string              `json:"policy"` // fscrypt policy or LUKS header summary
	Locked      bool                `json:"locked"`
	KeyStatus   string              `json:"keyStatus,omitempty"` // fscrypt: present, absent, incompletely-removed
	Owner       Owner               `json:"owner"`
	Mode        string              `json:"mode,omitempty"` // of the store directory
	Protectors  []ProtectorStatus   `json:"protectors"`
	Permissions []PermissionProblem `json:"permissionProblems"`
	Volume      string              `json:"volume,omitempty"`
	KeySlots    []KeySlot           `json:"keySlots,omitempty"`
	// FscryptTool is, for fscrypt, the policy file through which Debian's
	// fscrypt tool unlocks the store with the recovery key, or "none" or
	// "broken: why".
	FscryptTool string `json:"fscryptTool,omitempty"`
}

// ProtectorStatus is a protector without its secrets.
type ProtectorStatus struct {
	ID      string    `json:"id"`
	Kind    string    `json:"kind"`
	KDF     *KDF      `json:"kdf,omitempty"`
	KeySlot *int      `json:"keySlot,omitempty"`
	Created time.Time `json:"created"`
	// FscryptProtector is the fscrypt tool's protector for this key.
	FscryptProtector string `json:"fscryptProtector,omitempty"`
}

// Status reports backend, cipher, policy, lock state, owner, modes and any
// permission problems.
func (s *ModelStore) Status(ctx context.Context) (*Status, error) {
	st := &Status{
		Dir: s.Dir, Backend: s.Meta.Backend, ID: s.Meta.ID, Metadata: MetadataPath(s.Dir),
		Owner: s.Meta.Owner, Permissions: []PermissionProblem{},
	}
	for _, p := range s.Meta.Protectors {
		st.Protectors = append(st.Protectors, ProtectorStatus{ID: p.ID, Kind: p.Kind, KDF: p.KDF, KeySlot: p.KeySlot, Created: p.Created,
			FscryptProtector: p.FscryptProtector})
	}
	if fi, err := os.Lstat(s.Dir); err == nil {
		st.Mode = fmt.Sprintf("%04o", fi.Mode().Perm())
	}
	var pe *PermissionError
	if err := s.checkPermissions(); errors.As(err, &pe) {
		st.Permissions = pe.Problems
	} else if err != nil {
		return nil, fmt.Errorf("status %s: %w", s.Dir, err)
	}
	if err := s.b.status(ctx, s, st); err != nil {
		return nil, fmt.Errorf("status %s: %w", s.Dir, err)
	}
	return st, nil
}

// RotateKey replaces the protector that old opens with one for new; the data
// and the master key stay. Other protectors (the recovery key among them)
// are kept.
func (s *ModelStore) RotateKey(ctx context.Context, old, new Credential, opts Options) error {
	if new.kind() == "" || new.kind() == kindRecovery {
		return fmt.Errorf("rotate key of %s: the new key must be a key file or a passphrase", s.Dir)
	}
	if err := s.b.rotate(ctx, s, old, new, opts.kdf()); err != nil {
		return fmt.Errorf("rotate key of %s: %w", s.Dir, err)
	}
	return nil
}

// Erase is a crypto-erase: it locks the store, destroys every wrapped key
// (fscrypt) or key slot (LUKS) and the metadata file, and removes the
// ciphertext tree. No key, passphrase or recovery key can open the data
// afterwards. It needs no key, so a store whose keys are lost can still be
// decommissioned. trimmed reports whether the filesystem's free blocks were
// discarded afterwards (fscrypt on a device with discard support), which
// also clears old copies of the metadata left by rotate-key.
func (s *ModelStore) Erase(ctx context.Context) (trimmed bool, err error) {
	if err := s.b.erase(ctx, s); err != nil {
		return false, fmt.Errorf("erase %s: %w", s.Dir, err)
	}
	if err := destroyMetadata(s.Dir); err != nil {
		return false, fmt.Errorf("erase %s: %w", s.Dir, err)
	}
	return s.trimmed, nil
}
