//go:build !linux

package manifests

import "os"

func openInRoot(root, rel string) (*os.File, error) { return openByLstat(root, rel) }
