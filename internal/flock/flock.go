// Package flock takes advisory whole-file locks, so that two writers of one
// audit log (the gateway and a "kb ingest") never interleave a batch, two
// "tokens create" runs never lose each other's token, and two installs (or
// an install and an uninstall) never work on one host at once. It must never
// be used for anything that needs a lock across machines.
package flock

import "errors"

// ErrLocked is returned by TryLock when another process holds the lock.
var ErrLocked = errors.New("locked by another process")
