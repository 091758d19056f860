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
	if err := errors.Join(overwrite(f), f.Close()); err != nil {
		return err
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// WriteFileShredding replaces the file at path with data, as WriteFile
// does, and then overwrites the version it replaced with random bytes
// through a descriptor held across the rename, so that the blocks the old
// version frees hold no key material. Without it, every earlier version of
// a key file stays in free blocks until they are reused or discarded. A
// crash between the rename and the overwrite leaves the old blocks as
// they were, as WriteFile would.
func WriteFileShredding(path string, data []byte, perm fs.FileMode) error {
	old, err := os.OpenFile(path, os.O_WRONLY|noFollow, 0)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := WriteFile(path, data, perm); err != nil {
		if old != nil {
			old.Close()
		}
		return err
	}
	if old == nil {
		return nil
	}
	return errors.Join(overwrite(old), old.Close())
}

// overwrite fills a regular file with random bytes and fsyncs it; the
// fsync also writes an unlinked file's pages, which closing it would drop.
func overwrite(f *os.File) error {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return err
	}
	junk := make([]byte, fi.Size())
	rand.Read(junk)
	if _, err := f.WriteAt(junk, 0); err != nil {
		return err
	}
	return f.Sync()
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
