//go:build !unix

package flock

import "os"

// TryLock does nothing where flock(2) does not exist.
func TryLock(*os.File) error { return nil }

// Lock does nothing where flock(2) does not exist.
func Lock(*os.File) error { return nil }

// Unlock does nothing where flock(2) does not exist.
func Unlock(*os.File) error { return nil }
