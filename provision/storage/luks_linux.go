//go:build linux

package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// LUKS2 parameters every store volume gets.
const (
	luksCipher  = "aes-xts-plain64"
	luksKeyBits = 512 // two AES-256 keys for XTS
	luksPBKDF   = "argon2id"
)

// minVolumeSize leaves room for the 16 MiB LUKS2 header area and a small
// ext4 filesystem.
const minVolumeSize = 32 << 20

// procMisc lists the kernel's misc devices; device-mapper registers there.
// (libdevmapper creates /dev/mapper/control on demand even when the kernel
// has no device-mapper, so the node alone proves nothing.)
var procMisc = "/proc/misc"

var mapperRE = regexp.MustCompile(`^qwen-store-[0-9a-f]{16}$`)

// luksBackend keeps a store in a LUKS2 volume mounted at the store directory.
type luksBackend struct{ cs cryptsetupTool }

var _ backend = (*luksBackend)(nil)

// luksSecret is what cryptsetup gets for a credential. The recovery key is
// passed in its printed form, so a plain `cryptsetup open` with the printed
// text works too.
func luksSecret(c Credential) ([]byte, error) {
	if c.kind() == kindRecovery {
		b, err := parseRecoveryKey(c.RecoveryKey)
		if err != nil {
			return nil, err
		}
		return []byte(formatRecoveryKey(b)), nil
	}
	return c.secret()
}

// pbkdfArgs sets the argon2id cost of new key slots; cryptsetup refuses
// fewer than 4 passes.
func pbkdfArgs(k KDF) []string {
	return []string{"--pbkdf", luksPBKDF, "--pbkdf-force-iterations", strconv.Itoa(int(max(k.Time, 4))),
		"--pbkdf-memory", strconv.Itoa(int(k.MemoryKiB)), "--pbkdf-parallel", strconv.Itoa(int(k.Threads))}
}

// formatVolume writes a LUKS2 header to volume: aes-xts-plain64 with a
// 512-bit key, argon2id at the cost kdf, the first key slot opened by key.
func formatVolume(ctx context.Context, cs cryptsetupTool, volume, label string, key []byte, kdf KDF) error {
	args := append([]string{"luksFormat", "--batch-mode", "--type", "luks2", "--cipher", luksCipher,
		"--key-size", strconv.Itoa(luksKeyBits), "--hash", "sha256", "--label", label, "--key-slot", "0"}, pbkdfArgs(kdf)...)
	args = append(args, "--key-file", "/dev/fd/3", volume)
	_, err := cs.Run(ctx, [][]byte{key}, args...)
	return err
}

// addKeySlot adds newKey in slot, authorised by an existing key.
func addKeySlot(ctx context.Context, cs cryptsetupTool, volume string, key, newKey []byte, slot int, kdf KDF) error {
	args := append([]string{"luksAddKey", "--batch-mode", "--new-key-slot", strconv.Itoa(slot)}, pbkdfArgs(kdf)...)
	args = append(args, "--key-file", "/dev/fd/3", volume, "/dev/fd/4")
	_, err := cs.Run(ctx, [][]byte{key, newKey}, args...)
	if wrongKey(err) {
		return ErrWrongKey
	}
	return err
}

// killKeySlot wipes slot, authorised by a key of another slot.
func killKeySlot(ctx context.Context, cs cryptsetupTool, volume string, key []byte, slot int) error {
	_, err := cs.Run(ctx, [][]byte{key}, "luksKillSlot", "--batch-mode", "--key-file", "/dev/fd/3", volume, strconv.Itoa(slot))
	if wrongKey(err) {
		return ErrWrongKey
	}
	return err
}

// removeLUKSKey wipes the key slot that key opens.
func removeLUKSKey(ctx context.Context, cs cryptsetupTool, volume string, key []byte) error {
	_, err := cs.Run(ctx, [][]byte{key}, "luksRemoveKey", "--batch-mode", "--key-file", "/dev/fd/3", volume)
	if wrongKey(err) {
		return ErrWrongKey
	}
	return err
}

// testKey reports which key slot key opens, or ErrWrongKey; slot -1 tries
// every slot. It needs no device-mapper.
func testKey(ctx context.Context, cs cryptsetupTool, volume string, key []byte, slot int) error {
	args := []string{"open", "--test-passphrase", "--type", "luks2", "--key-file", "/dev/fd/3"}
	if slot >= 0 {
		args = append(args, "--key-slot", strconv.Itoa(slot))
	}
	_, err := cs.Run(ctx, [][]byte{key}, append(args, volume)...)
	if wrongKey(err) {
		return ErrWrongKey
	}
	return err
}

// readHeader inspects a LUKS2 header.
func readHeader(ctx context.Context, cs cryptsetupTool, volume string) (*luksHeader, error) {
	out, err := cs.Run(ctx, nil, "luksDump", "--dump-json-metadata", volume)
	if err != nil {
		return nil, err
	}
	return parseLUKSDump(out)
}

func (l *luksBackend) create(ctx context.Context, s *ModelStore, opts InitOptions, creds []Credential) (err error) {
	if opts.Volume == "" {
		return errors.New("the luks backend needs a volume (a block device or a file)")
	}
	volume, err := filepath.Abs(opts.Volume)
	if err != nil {
		return err
	}
	madeVolume := false
	fi, err := os.Stat(volume)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if opts.VolumeSize < minVolumeSize {
			return fmt.Errorf("volume %s does not exist and the size to create it with, %d bytes, is under %d", volume, opts.VolumeSize, minVolumeSize)
		}
		if err := createVolumeFile(volume, opts.VolumeSize); err != nil {
			return err
		}
		madeVolume = true
	case err != nil:
		return err
	case !fi.Mode().IsRegular() && fi.Mode()&fs.ModeDevice == 0:
		return fmt.Errorf("volume %s is a %s, not a block device or file", volume, typeName(fi.Mode()))
	default:
		if _, err := l.cs.Run(ctx, nil, "isLuks", volume); err == nil {
			return fmt.Errorf("%w: %s already holds a LUKS header (erase that store first)", ErrExists, volume)
		}
	}
	defer func() {
		if err != nil && madeVolume {
			os.Remove(volume)
		}
	}()
	s.Meta.LUKS = &LUKSInfo{Volume: volume, MapperName: "qwen-store-" + s.Meta.ID, FSType: "ext4"}
	kdf := opts.kdf()
	secrets := make([][]byte, len(creds))
	defer func() {
		for _, sec := range secrets {
			clear(sec)
		}
	}()
	for i, c := range creds {
		if secrets[i], err = luksSecret(c); err != nil {
			return fmt.Errorf("protect with %s: %w", c, err)
		}
	}
	if err := formatVolume(ctx, l.cs, volume, "qwen-"+s.Meta.ID, secrets[0], kdf); err != nil {
		return err
	}
	now := opts.now().UTC().Truncate(1e9)
	for i, c := range creds {
		slot := i
		if i > 0 {
			if err := addKeySlot(ctx, l.cs, volume, secrets[0], secrets[i], slot, kdf); err != nil {
				return fmt.Errorf("add key slot %d for %s: %w", slot, c, err)
			}
		}
		p := Protector{ID: newID(), Kind: c.kind(), KeySlot: &slot, Created: now}
		if c.kind() == kindPassphrase {
			p.KDF = &kdf
		}
		s.Meta.Protectors = append(s.Meta.Protectors, p)
	}
	if err := writeMetadata(s.Dir, s.Meta); err != nil {
		return err
	}
	// The header is written and the metadata names it, so the volume is kept
	// from here on; what follows needs device-mapper.
	madeVolume = false
	if err := l.open(ctx, s, secrets[0]); err != nil {
		return fmt.Errorf("formatted %s, but: %w", volume, err)
	}
	dev := "/dev/mapper/" + s.Meta.LUKS.MapperName
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-L", "qwen-store", dev).CombinedOutput(); err != nil {
		l.close(ctx, s)
		return fmt.Errorf("mkfs.ext4 %s: %v: %s", dev, err, out)
	}
	if err := l.mount(s); err != nil {
		l.close(ctx, s)
		return err
	}
	if err := os.Chmod(s.Dir, dirMode); err != nil {
		return err
	}
	os.Remove(filepath.Join(s.Dir, "lost+found"))
	return os.Chown(s.Dir, s.Meta.Owner.UID, s.Meta.Owner.GID)
}

func createVolumeFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = errors.Join(f.Truncate(size), f.Sync(), f.Close())
	if err != nil {
		os.Remove(path)
	}
	return err
}

// haveDeviceMapper reports whether the kernel can open a LUKS volume.
func haveDeviceMapper() error {
	data, err := os.ReadFile(procMisc)
	if err != nil || !regexp.MustCompile(`(?m)^\s*\d+ device-mapper$`).Match(data) {
		return ErrNoDeviceMapper
	}
	return nil
}

// open maps the volume at /dev/mapper/NAME.
func (l *luksBackend) open(ctx context.Context, s *ModelStore, key []byte) error {
	if err := haveDeviceMapper(); err != nil {
		return err
	}
	if _, err := os.Stat("/dev/mapper/" + s.Meta.LUKS.MapperName); err == nil {
		return nil // already open
	}
	_, err := l.cs.Run(ctx, [][]byte{key}, "open", "--type", "luks2", "--key-file", "/dev/fd/3", s.Meta.LUKS.Volume, s.Meta.LUKS.MapperName)
	if wrongKey(err) {
		return ErrWrongKey
	}
	return err
}

// mount mounts the opened volume at the store directory, without devices,
// set-uid programs or execution.
func (l *luksBackend) mount(s *ModelStore) error {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := os.MkdirAll(s.Dir, dirMode); err != nil {
		return err
	}
	if mounted(s.Dir) {
		return nil
	}
	dev := "/dev/mapper/" + s.Meta.LUKS.MapperName
	if err := unix.Mount(dev, s.Dir, s.Meta.LUKS.FSType, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount %s on %s: %w", dev, s.Dir, err)
	}
	return nil
}

// mounted reports whether dir is a mount point (its device differs from its
// parent's).
func mounted(dir string) bool {
	var a, b unix.Stat_t
	if unix.Stat(dir, &a) != nil || unix.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	return a.Dev != b.Dev
}

func (l *luksBackend) close(ctx context.Context, s *ModelStore) error {
	if _, err := os.Stat("/dev/mapper/" + s.Meta.LUKS.MapperName); err != nil {
		return nil
	}
	_, err := l.cs.Run(ctx, nil, "close", s.Meta.LUKS.MapperName)
	return err
}

func (l *luksBackend) unlock(ctx context.Context, s *ModelStore, cred Credential) error {
	key, err := luksSecret(cred)
	if err != nil {
		return err
	}
	defer clear(key)
	if err := testKey(ctx, l.cs, s.Meta.LUKS.Volume, key, -1); err != nil {
		if errors.Is(err, ErrWrongKey) {
			return fmt.Errorf("%w: the %s opens no key slot of %s", ErrWrongKey, cred, s.Meta.LUKS.Volume)
		}
		return err
	}
	if err := l.open(ctx, s, key); err != nil {
		return err
	}
	if err := l.mount(s); err != nil {
		return err
	}
	return checkTree(s.Dir, s.Meta.Owner, s.Meta.Guest)
}

func (l *luksBackend) lock(ctx context.Context, s *ModelStore) error {
	if mounted(s.Dir) {
		if err := unix.Unmount(s.Dir, 0); err != nil {
			if errors.Is(err, unix.EBUSY) {
				return &BusyError{Dir: s.Dir}
			}
			return fmt.Errorf("unmount %s: %w", s.Dir, err)
		}
	}
	return l.close(ctx, s)
}

func (l *luksBackend) status(ctx context.Context, s *ModelStore, st *Status) error {
	st.Volume = s.Meta.LUKS.Volume
	h, err := readHeader(ctx, l.cs, s.Meta.LUKS.Volume)
	if err != nil {
		return err
	}
	st.Cipher, st.KeyBits, st.KeySlots = h.Cipher, h.KeyBits, h.KeySlots
	st.Policy = fmt.Sprintf("LUKS2 %s, %d-bit key, %d key slot(s), sector %d", h.Cipher, h.KeyBits, len(h.KeySlots), h.SectorSize)
	_, err = os.Stat("/dev/mapper/" + s.Meta.LUKS.MapperName)
	st.Locked = err != nil || !mounted(s.Dir)
	return nil
}

func (l *luksBackend) rotate(ctx context.Context, s *ModelStore, old, new Credential, kdf KDF) error {
	oldKey, err := luksSecret(old)
	if err != nil {
		return err
	}
	defer clear(oldKey)
	newKey, err := luksSecret(new)
	if err != nil {
		return err
	}
	defer clear(newKey)
	idx := -1
	used := map[int]bool{}
	for i, p := range s.Meta.Protectors {
		used[*p.KeySlot] = true
		if idx < 0 && p.Kind == old.kind() && testKey(ctx, l.cs, s.Meta.LUKS.Volume, oldKey, *p.KeySlot) == nil {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("%w: the %s opens none of the store's %s key slots", ErrWrongKey, old, old.kind())
	}
	slot := 0
	for used[slot] {
		slot++
	}
	if err := addKeySlot(ctx, l.cs, s.Meta.LUKS.Volume, oldKey, newKey, slot, kdf); err != nil {
		return fmt.Errorf("add key slot %d: %w", slot, err)
	}
	if err := killKeySlot(ctx, l.cs, s.Meta.LUKS.Volume, newKey, *s.Meta.Protectors[idx].KeySlot); err != nil {
		return fmt.Errorf("wipe key slot %d: %w", *s.Meta.Protectors[idx].KeySlot, err)
	}
	m := *s.Meta
	m.Protectors = append(append([]Protector(nil), s.Meta.Protectors[:idx]...), s.Meta.Protectors[idx+1:]...)
	p := Protector{ID: newID(), Kind: new.kind(), KeySlot: &slot, Created: (Options{}).now().UTC().Truncate(1e9)}
	if new.kind() == kindPassphrase {
		p.KDF = &kdf
	}
	m.Protectors = append(m.Protectors, p)
	if err := writeMetadata(s.Dir, &m); err != nil {
		return err
	}
	*s.Meta = m
	return nil
}

func (l *luksBackend) erase(ctx context.Context, s *ModelStore) error {
	if err := l.lock(ctx, s); err != nil {
		return err
	}
	// luksErase wipes every key slot: the volume key is gone, and with it
	// the data.
	if _, err := l.cs.Run(ctx, nil, "erase", "--batch-mode", s.Meta.LUKS.Volume); err != nil {
		return err
	}
	return nil
}
