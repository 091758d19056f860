//go:build linux

package fscryptmeta

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// Names and modes of fscrypt's metadata directory (filesystem/filesystem.go).
const (
	baseName      = ".fscrypt"
	policiesName  = "policies"
	protectorsDir = "protectors"
	dirMode       = 0o755 // `fscrypt setup` without --all-users
	fileMode      = 0o600
	maxFileSize   = 16384 // fscrypt refuses larger metadata files
)

// FindMount returns the mount point whose root holds fscrypt's metadata for
// the filesystem that contains path, as `fscrypt` itself would choose it
// from /proc/self/mountinfo.
func FindMount(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return "", fmt.Errorf("find the mount of %s: %w", path, err)
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find the mount of %s: %w", path, err)
	}
	defer f.Close()
	all, err := parseMountInfo(f)
	if err != nil {
		return "", fmt.Errorf("find the mount of %s: %w", path, err)
	}
	var mine []mountEntry
	for _, m := range all {
		if fi, err := os.Stat(m.Path); m.Device == dev && err == nil && fi.IsDir() {
			mine = append(mine, m)
		}
	}
	if len(mine) == 0 {
		return "", fmt.Errorf("find the mount of %s: device %s is not in /proc/self/mountinfo", path, dev)
	}
	m, err := mainMount(mine)
	if err != nil {
		return "", fmt.Errorf("find the mount of %s: %w", path, err)
	}
	return m.Path, nil
}

// Dir is the fscrypt metadata directory of one filesystem, MOUNT/.fscrypt.
type Dir struct {
	Mount string // the main mount point (FindMount)
	Base  string // MOUNT/.fscrypt, or where a root-owned symlink there points
}

// resolve follows a .fscrypt symlink as fscrypt does (Mount.BaseDir), but
// only one that root or the caller owns.
func resolve(mount string) (string, error) {
	raw := filepath.Join(mount, baseName)
	fi, err := os.Lstat(raw)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return raw, nil
	}
	if !trusted(fi) {
		return "", fmt.Errorf("%s is a symlink owned by uid %d, not root", raw, owner(fi))
	}
	target, err := os.Readlink(raw)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(mount, target)
	}
	return target, nil
}

// PolicyPath is where the policy with descriptor desc is stored.
func (d Dir) PolicyPath(desc string) string { return filepath.Join(d.Base, policiesName, desc) }

// ProtectorPath is where the protector with descriptor desc is stored.
func (d Dir) ProtectorPath(desc string) string { return filepath.Join(d.Base, protectorsDir, desc) }

func owner(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return 0
}

func trusted(fi fs.FileInfo) bool {
	uid := owner(fi)
	return uid == 0 || int(uid) == os.Geteuid()
}

// Setup returns the metadata directory of the filesystem mounted at mount,
// creating a missing one as `fscrypt setup MOUNT` does (0755, by an atomic
// rename). Like Open, it refuses one that fscrypt would not accept
// (Mount.CheckSetup) or that somebody other than root controls.
func Setup(mount string) (Dir, error) {
	base, err := resolve(mount)
	if err != nil {
		return Dir{}, fmt.Errorf("fscrypt metadata: %w", err)
	}
	if _, err := os.Lstat(base); errors.Is(err, fs.ErrNotExist) {
		if err := create(base); err != nil {
			return Dir{}, fmt.Errorf("fscrypt metadata: create %s: %w", base, err)
		}
	}
	return Open(mount)
}

// Open returns the metadata directory of the filesystem mounted at mount.
// The error matches fs.ErrNotExist when there is none. It refuses a
// directory whose parts are symlinks, are not root's, or are world-writable
// without the sticky bit.
func Open(mount string) (Dir, error) {
	base, err := resolve(mount)
	if err != nil {
		return Dir{}, fmt.Errorf("fscrypt metadata: %w", err)
	}
	fi, err := os.Stat(base)
	if err != nil {
		return Dir{}, fmt.Errorf("fscrypt metadata: %w", err)
	}
	if !fi.IsDir() || !trusted(fi) {
		return Dir{}, fmt.Errorf("fscrypt metadata: %s is not a directory owned by root", base)
	}
	for _, sub := range []string{policiesName, protectorsDir} {
		p := filepath.Join(base, sub)
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return Dir{}, fmt.Errorf("fscrypt metadata: %s exists without %s (make it, root's and 0755, or remove %s if it holds nothing)", base, sub, base)
		case err != nil:
			return Dir{}, fmt.Errorf("fscrypt metadata: %w", err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return Dir{}, fmt.Errorf("fscrypt metadata: %s is a symlink; fscrypt accepts only a directory", p)
		case !fi.IsDir():
			return Dir{}, fmt.Errorf("fscrypt metadata: %s is not a directory", p)
		case !trusted(fi):
			return Dir{}, fmt.Errorf("fscrypt metadata: %s is owned by uid %d, not root", p, owner(fi))
		case fi.Mode()&(fs.ModeSticky|0o002) == 0o002:
			return Dir{}, fmt.Errorf("fscrypt metadata: %s is world-writable without the sticky bit", p)
		}
	}
	return Dir{Mount: mount, Base: base}, nil
}

// create builds .fscrypt in a temporary directory beside it and renames it
// into place, so fscrypt never sees half of it.
func create(base string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(base), ".tmp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	staged := filepath.Join(tmp, baseName)
	for _, p := range []string{staged, filepath.Join(staged, policiesName), filepath.Join(staged, protectorsDir)} {
		if err := os.Mkdir(p, dirMode); err != nil {
			return err
		}
		if err := os.Chmod(p, dirMode); err != nil { // despite the umask
			return err
		}
	}
	if err := os.Rename(staged, base); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return nil // made meanwhile; Setup checks it
		}
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(base))
}

// WritePolicy stores p under its descriptor, replacing any earlier file
// atomically.
func (d Dir) WritePolicy(p *Policy) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("write fscrypt policy: %w", err)
	}
	return writeFile(d.PolicyPath(p.KeyDescriptor), p.marshal())
}

// WriteProtector stores p under its descriptor, replacing any earlier file
// atomically.
func (d Dir) WriteProtector(p *Protector) error {
	if err := p.check(); err != nil {
		return fmt.Errorf("write fscrypt protector: %w", err)
	}
	return writeFile(d.ProtectorPath(p.Descriptor), p.marshal())
}

// ReadPolicy loads the policy with descriptor desc; the error matches
// fs.ErrNotExist when there is none.
func (d Dir) ReadPolicy(desc string) (*Policy, error) {
	data, err := readFile(d.PolicyPath(desc))
	if err != nil {
		return nil, err
	}
	p, err := unmarshalPolicy(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.PolicyPath(desc), err)
	}
	if p.KeyDescriptor != desc {
		return nil, fmt.Errorf("%s: holds policy %s", d.PolicyPath(desc), p.KeyDescriptor)
	}
	return p, nil
}

// ReadProtector loads the protector with descriptor desc; the error matches
// fs.ErrNotExist when there is none.
func (d Dir) ReadProtector(desc string) (*Protector, error) {
	data, err := readFile(d.ProtectorPath(desc))
	if err != nil {
		return nil, err
	}
	p, err := unmarshalProtector(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.ProtectorPath(desc), err)
	}
	if p.Descriptor != desc {
		return nil, fmt.Errorf("%s: holds protector %s", d.ProtectorPath(desc), p.Descriptor)
	}
	return p, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read fscrypt metadata: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read fscrypt metadata: %w", err)
	}
	if !fi.Mode().IsRegular() || !trusted(fi) {
		return nil, fmt.Errorf("read fscrypt metadata: %s is not a regular file owned by root", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read fscrypt metadata %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("read fscrypt metadata %s: larger than %d bytes", path, maxFileSize)
	}
	return data, nil
}

// writeFile replaces path with data (0600), and overwrites the version it
// replaced, which held wrapped keys too (atomicfile.WriteFileShredding).
func writeFile(path string, data []byte) error {
	if err := atomicfile.WriteFileShredding(path, data, fileMode); err != nil {
		return fmt.Errorf("write fscrypt metadata %s: %w", path, err)
	}
	return nil
}

// Destroy overwrites a metadata file with random bytes, syncs and removes
// it; a missing file is not an error. Old copies of the blocks may survive
// on journaling filesystems and flash, as with any overwrite.
func Destroy(path string) error {
	if err := atomicfile.Shred(path); err != nil {
		return fmt.Errorf("destroy fscrypt metadata %s: %w", path, err)
	}
	return nil
}
