//go:build linux

package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// fscryptPadding is the file name padding: 32 bytes hides name lengths best
// and is what Debian's fscrypt tool uses for v2 policies.
const fscryptPadding = 32

// fscryptBackend keeps a store as an fscrypt v2 directory.
type fscryptBackend struct {
	k fscryptKernel
	// toolMount finds where the fscrypt tool keeps its metadata for a store.
	toolMount func(dir string) (string, error)
}

var _ backend = (*fscryptBackend)(nil)

// policy is the one policy stores get: v2, AES-256-XTS contents,
// AES-256-CTS names.
func policy(id [16]byte) unix.FscryptPolicyV2 {
	return unix.FscryptPolicyV2{
		Version:                   unix.FSCRYPT_POLICY_V2,
		Contents_encryption_mode:  unix.FSCRYPT_MODE_AES_256_XTS,
		Filenames_encryption_mode: unix.FSCRYPT_MODE_AES_256_CTS,
		Flags:                     unix.FSCRYPT_POLICY_FLAGS_PAD_32,
		Master_key_identifier:     id,
	}
}

// openParent opens the directory above the store, on the same filesystem,
// which carries the key ioctls.
func openParent(dir string) (*os.File, error) {
	return os.Open(filepath.Dir(dir))
}

// notEncryptable turns the errnos of a filesystem without fscrypt into a
// *NotEncryptableError.
func notEncryptable(dir string, err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		return &NotEncryptableError{Dir: dir, FSType: fsTypeName(filepath.Dir(dir)), Err: err}
	}
	return err
}

func (f *fscryptBackend) create(ctx context.Context, s *ModelStore, opts InitOptions, creds []Credential) (err error) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	parent, err := openParent(s.Dir)
	if err != nil {
		return err
	}
	defer parent.Close()
	made := false
	if err := os.Mkdir(s.Dir, dirMode); err == nil {
		made = true
	} else if !errors.Is(err, os.ErrExist) {
		return err
	}
	key := make([]byte, fscryptKeySize)
	defer clear(key)
	rand.Read(key)
	id, err := f.k.addKey(parent, key)
	if err != nil {
		if made {
			os.Remove(s.Dir)
		}
		return notEncryptable(s.Dir, err)
	}
	defer func() {
		if err != nil {
			if descs := toolProtectors(s.Meta); len(descs) > 0 {
				f.removeToolProtectors(s, descs, false)
			}
			f.k.removeKey(parent, id)
			if made {
				os.Remove(s.Dir)
			}
		}
	}()
	d, err := os.Open(s.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := f.k.setPolicy(d, policy(id)); err != nil {
		return notEncryptable(s.Dir, err)
	}
	s.Meta.Fscrypt = &FscryptInfo{PolicyVersion: 2, Contents: "AES-256-XTS", Filenames: "AES-256-CTS",
		Padding: fscryptPadding, KeyIdentifier: hex.EncodeToString(id[:])}
	for _, c := range creds {
		if err := s.Meta.addProtector(c, key, opts.kdf(), opts.now()); err != nil {
			return fmt.Errorf("protect with %s: %w", c, err)
		}
		if c.kind() != kindRecovery {
			continue
		}
		secret, err := c.secret()
		if err != nil {
			return err
		}
		desc, err := f.addToolProtector(s, key, secret)
		clear(secret)
		if err != nil {
			return fmt.Errorf("write the fscrypt tool's metadata for the %s: %w", c, err)
		}
		s.Meta.Protectors[len(s.Meta.Protectors)-1].FscryptProtector = desc
	}
	if err := d.Chmod(dirMode); err != nil {
		return err
	}
	if err := d.Chown(s.Meta.Owner.UID, s.Meta.Owner.GID); err != nil {
		return err
	}
	return writeMetadata(s.Dir, s.Meta)
}

func (s *ModelStore) keyID() [16]byte {
	var id [16]byte
	b, _ := hex.DecodeString(s.Meta.Fscrypt.KeyIdentifier) // validated on read
	copy(id[:], b)
	return id
}

// checkPolicy confirms the directory carries the policy the metadata names,
// so metadata beside another directory cannot unlock the wrong tree.
func (f *fscryptBackend) checkPolicy(s *ModelStore) error {
	d, err := os.Open(s.Dir)
	if err != nil {
		return err
	}
	defer d.Close()
	p, err := f.k.getPolicy(d)
	if errors.Is(err, unix.ENODATA) {
		return fmt.Errorf("%s is not encrypted (no fscrypt policy)", s.Dir)
	}
	if err != nil {
		return notEncryptable(s.Dir, err)
	}
	if want := policy(s.keyID()); p != want {
		return fmt.Errorf("%s has fscrypt policy %s, the metadata says %s", s.Dir, describePolicy(p), describePolicy(want))
	}
	return nil
}

func describePolicy(p unix.FscryptPolicyV2) string {
	mode := map[uint8]string{unix.FSCRYPT_MODE_AES_256_XTS: "AES-256-XTS", unix.FSCRYPT_MODE_AES_256_CTS: "AES-256-CTS",
		unix.FSCRYPT_MODE_ADIANTUM: "Adiantum", unix.FSCRYPT_MODE_AES_128_CBC: "AES-128-CBC", unix.FSCRYPT_MODE_AES_128_CTS: "AES-128-CTS",
		unix.FSCRYPT_MODE_AES_256_HCTR2: "AES-256-HCTR2"}
	name := func(m uint8) string {
		if s, ok := mode[m]; ok {
			return s
		}
		return fmt.Sprintf("mode %d", m)
	}
	return fmt.Sprintf("v%d %s/%s pad %d key %x", p.Version, name(p.Contents_encryption_mode), name(p.Filenames_encryption_mode),
		4<<(p.Flags&unix.FSCRYPT_POLICY_FLAGS_PAD_MASK), p.Master_key_identifier)
}

func (f *fscryptBackend) unlock(ctx context.Context, s *ModelStore, cred Credential) error {
	key, _, err := s.Meta.unwrap(cred)
	if err != nil {
		return err
	}
	defer clear(key)
	if err := f.checkPolicy(s); err != nil {
		return err
	}
	parent, err := openParent(s.Dir)
	if err != nil {
		return err
	}
	defer parent.Close()
	id, err := f.k.addKey(parent, key)
	if err != nil {
		return err
	}
	if want := s.keyID(); !bytes.Equal(id[:], want[:]) {
		f.k.removeKey(parent, id)
		return fmt.Errorf("the unwrapped key has identifier %x, the store's policy wants %x", id, want)
	}
	return nil
}

func (f *fscryptBackend) lock(ctx context.Context, s *ModelStore) error {
	parent, err := openParent(s.Dir)
	if err != nil {
		return err
	}
	defer parent.Close()
	// Write dirty pages while the key is still there; the kernel then evicts
	// the decrypted inodes and names when the key goes.
	if err := unix.Syncfs(int(parent.Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	busy, err := f.k.removeKey(parent, s.keyID())
	if errors.Is(err, unix.ENOKEY) {
		return nil // already locked
	}
	if err != nil {
		return err
	}
	if busy {
		return &BusyError{Dir: s.Dir}
	}
	return nil
}

func (f *fscryptBackend) status(ctx context.Context, s *ModelStore, st *Status) error {
	st.Cipher = s.Meta.Fscrypt.Contents + "/" + s.Meta.Fscrypt.Filenames
	st.KeyBits = fscryptKeySize * 8
	st.Policy = fmt.Sprintf("fscrypt v%d, contents %s, names %s, padding %d, key %s",
		s.Meta.Fscrypt.PolicyVersion, s.Meta.Fscrypt.Contents, s.Meta.Fscrypt.Filenames, s.Meta.Fscrypt.Padding, s.Meta.Fscrypt.KeyIdentifier)
	if err := f.checkPolicy(s); err != nil {
		st.Permissions = append(st.Permissions, PermissionProblem{Path: s.Dir, Detail: err.Error()})
	}
	st.FscryptTool = f.toolStatus(s)
	parent, err := openParent(s.Dir)
	if err != nil {
		return err
	}
	defer parent.Close()
	ks, err := f.k.keyStatus(parent, s.keyID())
	if err != nil {
		return err
	}
	switch ks {
	case unix.FSCRYPT_KEY_STATUS_PRESENT:
		st.KeyStatus = "present"
	case unix.FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED:
		st.KeyStatus = "incompletely-removed"
		st.Locked = true
	default:
		st.KeyStatus = "absent"
		st.Locked = true
	}
	return nil
}

func (f *fscryptBackend) rotate(ctx context.Context, s *ModelStore, old, new Credential, kdf KDF) error {
	key, i, err := s.Meta.unwrap(old)
	if err != nil {
		return err
	}
	defer clear(key)
	// The fscrypt tool's copy goes first: if anything below fails, the old
	// key opens at most our own metadata, and rotating again finishes.
	if desc := s.Meta.Protectors[i].FscryptProtector; desc != "" {
		if err := f.removeToolProtectors(s, []string{desc}, false); err != nil {
			return fmt.Errorf("retire the fscrypt tool's protector for the %s: %w", old, err)
		}
	}
	m := *s.Meta
	m.Protectors = append(append([]Protector(nil), s.Meta.Protectors[:i]...), s.Meta.Protectors[i+1:]...)
	if err := m.addProtector(new, key, kdf, (Options{}).now()); err != nil {
		return fmt.Errorf("protect with %s: %w", new, err)
	}
	if err := writeMetadata(s.Dir, &m); err != nil {
		return err
	}
	*s.Meta = m
	return nil
}

func (f *fscryptBackend) erase(ctx context.Context, s *ModelStore) error {
	if err := f.lock(ctx, s); err != nil {
		var be *BusyError
		if !errors.As(err, &be) {
			return err
		}
		// Open files keep their pages until closed; the wrapped keys are
		// destroyed anyway, so nothing reopens the data afterwards.
	}
	descs := toolProtectors(s.Meta)
	if err := f.removeToolProtectors(s, descs, true); err != nil && len(descs) > 0 {
		return fmt.Errorf("destroy the fscrypt tool's metadata: %w", err)
	}
	if err := destroyMetadata(s.Dir); err != nil {
		return err
	}
	// The ciphertext can be unlinked without the key.
	if err := os.RemoveAll(s.Dir); err != nil {
		return fmt.Errorf("remove ciphertext: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(s.Dir)); err != nil {
		return err
	}
	s.trimmed = trimFreeBlocks(filepath.Dir(s.Dir))
	return nil
}

// trimFreeBlocks discards the filesystem's free blocks (FITRIM, as fstrim
// does), so that freed ciphertext and the blocks of earlier metadata
// versions (rotate-key writes a new file each time) read back as zeros on
// devices that support discard. It reports whether the discard ran.
func trimFreeBlocks(dir string) bool {
	d, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer d.Close()
	// Freed blocks become trimmable once the journal has committed.
	if unix.Syncfs(int(d.Fd())) != nil {
		return false
	}
	// struct fstrim_range; FITRIM is _IOWR('X', 121, struct fstrim_range).
	r := struct{ start, length, minlen uint64 }{0, ^uint64(0), 0}
	const fitrim = 0xc0185879
	return ioctl(d, fitrim, unsafe.Pointer(&r)) == nil
}
