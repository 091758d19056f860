// Package space reads and writes byte counts (4G, 650M) and checks that a
// filesystem has room for work before it starts.
//
// It must never guess: a failed statfs is an error, not "enough".
package space

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNoSpace is matched by the error of Check when the filesystem is too
// small for the work about to start.
var ErrNoSpace = errors.New("not enough free space")

// Check fails with ErrNoSpace, naming both figures, when the filesystem
// holding path (or its nearest existing parent) has fewer than need bytes
// available to this user. what says what the space is for.
func Check(path string, need int64, what string) error {
	p, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	for {
		if _, err := os.Stat(p); err == nil {
			break
		}
		parent := filepath.Dir(p)
		if parent == p {
			break
		}
		p = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return fmt.Errorf("check free space on %s: %w", p, err)
	}
	have := int64(st.Bavail) * int64(st.Bsize)
	if have < need {
		return fmt.Errorf("%w on %s for %s: need %s (%d bytes), have %s (%d bytes)", ErrNoSpace, p, what, Format(need), need, Format(have), have)
	}
	return nil
}
