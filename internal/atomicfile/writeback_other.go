//go:build !linux

package atomicfile

import "os"

// StartWriteback does nothing here: the final fsync does all the work.
func StartWriteback(*os.File, int64, int64) {}
