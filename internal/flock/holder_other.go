//go:build !linux

package flock

// Holder is only implemented on Linux; it returns 0.
func Holder(string) int { return 0 }
