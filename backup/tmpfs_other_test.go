//go:build !linux

package backup

import "testing"

// mountTmpfs skips the test: a small tmpfs is mounted only on Linux.
func mountTmpfs(t *testing.T, _, _ string) {
	t.Helper()
	t.Skip("needs a Linux tmpfs")
}
