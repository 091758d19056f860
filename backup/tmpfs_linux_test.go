//go:build linux

package backup

import (
	"syscall"
	"testing"
)

// mountTmpfs mounts a tmpfs of size (as mount's size= option spells it) on
// dir until the test ends, and skips the test when it cannot.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}
