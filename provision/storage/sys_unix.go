//go:build unix

package storage

import "syscall"

// oNoFollow makes an open fail on a symlink as the last element.
const oNoFollow = syscall.O_NOFOLLOW

// oNonblock makes opening a FIFO return at once instead of waiting for a
// writer; reads of a regular file ignore it.
const oNonblock = syscall.O_NONBLOCK

func setUmask(mask int) int { return syscall.Umask(mask) }
