//go:build unix

package atomicfile

import (
	"errors"
	"os"
	"syscall"
)

// chownLike gives f the owner and group of the file at path, when there is
// one and they differ from f's.
func chownLike(f *os.File, path string) error {
	old, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	cur, err := f.Stat()
	if err != nil {
		return err
	}
	o, c := old.Sys().(*syscall.Stat_t), cur.Sys().(*syscall.Stat_t)
	if o.Uid == c.Uid && o.Gid == c.Gid {
		return nil
	}
	return f.Chown(int(o.Uid), int(o.Gid))
}
