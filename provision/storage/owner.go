package storage

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SetOwner gives the store to owner: every file and directory in it, and
// the owner its metadata records, which Unlock checks the tree against.
// Modes stay as they are. The tree must first pass CheckPermissions for the
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
	err := filepath.WalkDir(s.Dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
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
