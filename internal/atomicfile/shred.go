package atomicfile

import (
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// Shred overwrites the regular file at path with random bytes, fsyncs it,
// removes it and fsyncs its directory, for small files that hold key
// material. A missing file is not an error; a symlink is not followed
// (the open fails) and nothing else is overwritten. Old copies of the
// blocks may survive on journaling filesystems and flash, as with any
// overwrite.
func Shred(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|noFollow, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err == nil && fi.Mode().IsRegular() {
		junk := make([]byte, fi.Size())
		rand.Read(junk)
		_, err = f.WriteAt(junk, 0)
	}
	if err := errors.Join(err, f.Sync(), f.Close()); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory, so that the entries created, renamed or
// removed in it are on disk.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
