package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// GuestRootMode is the mode of a store's root when it has a guest: the
// owner (the runtime) as always, and search permission, no listing, for the
// guest's group alone, so the guest reaches its own directory by name and
// nothing else. Others get nothing.
const GuestRootMode fs.FileMode = 0o710

// Guest is another account given one top-level directory of a store: the
// gateway's user and the knowledge base, which must lie in the encrypted
// store while only the runtime reads the weights. The guest's directory and
// everything in it are the guest's (uid and gid), with no group or other
// permission bits; its files may be writable by the guest (a database and
// its -wal/-shm files are 0600). The store's root gets the guest's group
// and GuestRootMode.
type Guest struct {
	Dir   string `json:"dir"` // a name at the store's top level, e.g. "kb"
	Owner Owner  `json:"owner"`
}

func (g *Guest) validate(owner Owner) error {
	switch {
	case g == nil:
		return nil
	case g.Dir == "" || g.Dir == "." || g.Dir == ".." || filepath.Base(g.Dir) != g.Dir:
		return fmt.Errorf("dir %q is not one name", g.Dir)
	case g.Owner.UID <= 0 || g.Owner.GID <= 0:
		return errors.New("owner: the guest must be a service account, not root")
	case g.Owner.UID == owner.UID || g.Owner.GID == owner.GID:
		return errors.New("owner: the guest shares the store owner's uid or gid, so the separation would be a fiction")
	}
	return nil
}

// check applies the guest's rules to one entry of its directory.
func (g *Guest) check(path string, fi fs.FileInfo, add func(path, format string, args ...any)) {
	mode := fi.Mode()
	if uid, gid, ok := fileOwner(fi); ok && (uid != g.Owner.UID || gid != g.Owner.GID) {
		add(path, "owned by uid %d gid %d, want the guest's uid %d gid %d (%s)", uid, gid, g.Owner.UID, g.Owner.GID, g.Owner.label())
	}
	switch {
	case mode.IsDir():
		if mode.Perm()&^dirMode != 0 || mode&(fs.ModeSetgid|fs.ModeSetuid|fs.ModeSticky) != 0 {
			add(path, "directory mode %04o is looser than %04o", mode.Perm(), dirMode)
		}
	case mode.IsRegular():
		if mode.Perm()&0o077 != 0 || mode&(fs.ModeSetgid|fs.ModeSetuid) != 0 {
			add(path, "file mode %04o is looser than 0600", mode.Perm())
		}
	default:
		add(path, "is a %s; a store holds only regular files and directories", typeName(mode))
	}
}

func skipDir(d fs.DirEntry) error {
	if d.IsDir() {
		return filepath.SkipDir
	}
	return nil
}

// SetGuest records g as the store's guest (nil removes it) and applies its
// layout: the root gets g's group and GuestRootMode, and g.Dir, made when
// missing, is g's with mode 0700. The store must be unlocked (the guest's
// directory has a plaintext name only then) and must first pass the
// permission check for what it records now, so a store someone loosened is
// refused rather than blessed.
func (s *ModelStore) SetGuest(g *Guest) error {
	if err := g.validate(s.Meta.Owner); err != nil {
		return fmt.Errorf("give %s a guest: %w", s.Dir, err)
	}
	if err := s.checkPermissions(); err != nil {
		return fmt.Errorf("give %s a guest: %w", s.Dir, err)
	}
	if err := ApplyGuest(s.Dir, s.Meta.Owner, g); err != nil {
		return err
	}
	if same(s.Meta.Guest, g) {
		return nil
	}
	m := *s.Meta
	m.Guest = g
	if err := writeMetadata(s.Dir, &m); err != nil {
		return err
	}
	s.Meta = &m
	return nil
}

func same(a, b *Guest) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// ApplyGuest gives the store directory dir the layout of a store owned by
// owner with guest g (nil: no guest, root mode 0700 and the owner's group).
// It is SetGuest without metadata, for an unencrypted store; it changes
// only the root and the guest's directory, whose contents keep their modes.
func ApplyGuest(dir string, owner Owner, g *Guest) error {
	gid, mode := owner.GID, dirMode
	if g != nil {
		gid, mode = g.Owner.GID, GuestRootMode
	}
	if err := os.Chown(dir, owner.UID, gid); err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	if err := os.Chmod(dir, mode); err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	if g == nil {
		return nil
	}
	p := filepath.Join(dir, g.Dir)
	if err := os.Mkdir(p, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("store %s: %s is a %s, not a directory", dir, p, typeName(fi.Mode()))
	}
	if err := os.Chown(p, g.Owner.UID, g.Owner.GID); err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	if err := os.Chmod(p, dirMode); err != nil {
		return fmt.Errorf("store %s: %w", dir, err)
	}
	return nil
}
