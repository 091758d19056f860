//go:build linux

package atomicfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to begin writing [off, off+n) of f to disk
// now, without waiting, so that the fsync that makes a downloaded or copied
// file durable finds little left to do instead of stalling at the end. (On
// an fscrypt store that is also when contents are encrypted, so the
// encryption runs on another core while the next bytes are read and hashed.)
func StartWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
