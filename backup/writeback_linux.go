//go:build linux

package backup

import (
	"os"

	"golang.org/x/sys/unix"
)

// writebackStep is how far the archive grows between two requests to the
// kernel to start writing it out.
const writebackStep = 16 << 20

// writeback writes to f and asks the kernel to start writing each
// writebackStep bytes to the disk as they come (sync_file_range), so that
// the fsync that makes the archive durable, at the end, does not wait for
// all of it: the disk works while the archive is still being encrypted.
// It changes nothing about durability: the caller still syncs.
type writeback struct {
	f       *os.File
	written int64
	started int64
}

func (w *writeback) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.written += int64(n)
	if w.written-w.started >= writebackStep {
		// Advice only: an error here leaves the final fsync to do it all.
		_ = unix.SyncFileRange(int(w.f.Fd()), w.started, w.written-w.started, unix.SYNC_FILE_RANGE_WRITE)
		w.started = w.written
	}
	return n, err
}
