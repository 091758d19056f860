//go:build !unix

package atomicfile

import "os"

// chownLike does nothing where files have no Unix owner.
func chownLike(*os.File, string) error { return nil }
