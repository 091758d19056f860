//go:build !linux

package provision

// fscryptToolDir is "": fscrypt stores exist only on Linux.
func fscryptToolDir(store string) string { return "" }
