package storage

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SetOwner gives the store to owner: every file and directory in it, and
// the owner its metadata records, which Unlock checks the tree against.
// Modes stay as they are. The tree must first pass checkTree for the
// current owner, so a store someone loosened is refused rather than handed
// on. Install uses it when the account that owns the store changes (the
// runtime's own user replacing the one it shared with the gateway).
func (s *ModelStore) SetOwner(owner Owner) error {
	if s.Meta.Owner.UID == owner.UID && s.Meta.Owner.GID == owner.GID {
		return nil
	}
	if err := s.checkPermissions(); err != nil {
		return fmt.Errorf("give %s to %s: %w", s.Dir, owner.label(), err)
	}
	err := filepath.WalkDir(s.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// The guest's directory stays the guest's; the root keeps the
		// guest's group.
		if g := s.Meta.Guest; g != nil {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			switch uid, _, _ := fileOwner(fi); {
			case p == s.Dir:
				return os.Lchown(p, owner.UID, g.Owner.GID)
			case uid == g.Owner.UID && filepath.Dir(p) == s.Dir:
				return skipDir(d)
			}
		}
		return os.Lchown(p, owner.UID, owner.GID)
	})
	if err != nil {
		return fmt.Errorf("give %s to %s: %w", s.Dir, owner.label(), err)
	}
	m := *s.Meta
	m.Owner = owner
	if err := writeMetadata(s.Dir, &m); err != nil {
		return err
	}
	s.Meta = &m
	return nil
}
