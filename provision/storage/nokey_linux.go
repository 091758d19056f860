//go:build linux

package storage

import (
	"errors"

	"golang.org/x/sys/unix"
)

// isNoKey reports the kernel's "fscrypt key not loaded".
func isNoKey(err error) bool { return errors.Is(err, unix.ENOKEY) }
