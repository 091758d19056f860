//go:build linux

package provision

import (
	"os"
	"path/filepath"

	"github.com/qwen-appliance/qwen-appliance/provision/storage/fscryptmeta"
)

// fscryptToolDir is the fscrypt tool's metadata directory (MOUNT/.fscrypt)
// of the filesystem store is or will be on, or "" when it cannot be found.
func fscryptToolDir(store string) string {
	mnt, err := fscryptmeta.FindMount(existingAncestor(store))
	if err != nil {
		return ""
	}
	return filepath.Join(mnt, ".fscrypt")
}

// existingAncestor is path, or its nearest ancestor that exists.
func existingAncestor(path string) string {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil || p == filepath.Dir(p) {
			return p
		}
	}
}
