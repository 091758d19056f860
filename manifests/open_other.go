//go:build !linux

package manifests

import "os"

func openInRoot(root, rel string) (*os.File, error) { return openByLstat(root, rel) }

func openNonblock(path string) (*os.File, error) { return os.Open(path) }

func setBlocking(*os.File) error { return nil }
