package storage

import (
	"errors"
	"fmt"
	"strings"
)

// Errors callers branch on.
var (
	// ErrUnsupported is returned on platforms without fscrypt or LUKS.
	ErrUnsupported = errors.New("encrypted storage is only supported on Linux")
	// ErrWrongKey means no protector of the store opened with the key given.
	ErrWrongKey = errors.New("the key does not open this store")
	// ErrLocked means the store's key is not loaded, so its files cannot be
	// read or written.
	ErrLocked = errors.New("store is locked")
	// ErrNoStore means the directory has no store metadata beside it.
	ErrNoStore = errors.New("no encrypted store")
	// ErrExists means init was asked to create a store where one (or other
	// data) already is.
	ErrExists = errors.New("store already exists")
	// ErrNoDeviceMapper means the kernel cannot open a LUKS volume here.
	ErrNoDeviceMapper = errors.New("device-mapper is not available (no device-mapper in /proc/misc: the kernel lacks CONFIG_BLK_DEV_DM or dm_mod is not loaded)")
)

// NotEncryptableError reports a filesystem that cannot hold an fscrypt
// store; the LUKS backend is the way out.
type NotEncryptableError struct {
	Dir    string
	FSType string // e.g. tmpfs, ext4
	Err    error
}

func (e *NotEncryptableError) Error() string {
	why := "does not support fscrypt encryption"
	if e.FSType == "ext4" {
		why += " (an ext4 filesystem needs the 'encrypt' feature: tune2fs -O encrypt)"
	}
	return fmt.Sprintf("%s is on a filesystem (%s) that %s: %v", e.Dir, e.FSType, why, e.Err)
}

func (e *NotEncryptableError) Unwrap() error { return e.Err }

// BusyError reports a lock that removed the key while files were still open:
// their contents stay readable through the open handles and the page cache
// until they are closed, after which locking again completes.
type BusyError struct{ Dir string }

func (e *BusyError) Error() string {
	return fmt.Sprintf("lock %s: the key was removed but files in it are still open; they stay readable until closed, then lock again", e.Dir)
}

// PermissionError lists entries of a store whose owner, mode or type is
// looser than the store allows.
type PermissionError struct {
	Problems []PermissionProblem
}

// PermissionProblem is one entry that breaks the store's permission rules.
type PermissionProblem struct {
	Path   string `json:"path"`
	Detail string `json:"detail"`
}

func (e *PermissionError) Error() string {
	var b strings.Builder
	b.WriteString("store permissions are too loose: ")
	for i, p := range e.Problems {
		if i == 5 {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Path + ": " + p.Detail)
	}
	return b.String()
}
