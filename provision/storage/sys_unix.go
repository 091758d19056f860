//go:build unix

package storage

import "syscall"

// oNoFollow makes an open fail on a symlink as the last element.
const oNoFollow = syscall.O_NOFOLLOW

func setUmask(mask int) int { return syscall.Umask(mask) }
