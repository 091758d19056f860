//go:build linux

package storage

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to begin writing [off, off+n) of f now,
// without waiting. On an fscrypt store that is when contents are encrypted,
// so the encryption of what was written runs on another core while the next
// bytes are read and hashed, instead of all of it waiting for fsync.
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
