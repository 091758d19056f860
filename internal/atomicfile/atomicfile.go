// Package atomicfile writes files so that a crash or power loss leaves either
// the old contents or the new ones, never a mix, and starts writeback early so
// that the final fsync of a large file does not stall. It must never leave a
// temporary file behind after a failed write, nor rename a file into place
// before its bytes are on disk.
package atomicfile

import (
	"os"
	"path/filepath"
)

// WriteFile writes data to path through a temporary file in the same
// directory, fsyncs it and the directory, and renames it into place, so a
// crash leaves either the old file or the new one.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

// ReplaceFile is WriteFile for a file that another user reads: the new file
// keeps the owner and group of the one it replaces (root editing a service's
// file must not take it away from the service), and gets them before it is
// renamed into place, so the service never sees a file it cannot read.
func ReplaceFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

func write(path string, data []byte, perm os.FileMode, keepOwner bool) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if keepOwner {
		if err := chownLike(tmp, path); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}
