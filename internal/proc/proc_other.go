//go:build !linux

package proc

import (
	"errors"
	"syscall"
	"time"
)

// Read is only implemented on Linux.
func Read(int) (Stat, error) { return Stat{}, errors.ErrUnsupported }

// Alive is only implemented on Linux; it reports false.
func Alive(int) bool { return false }

// Descendants is only implemented on Linux.
func Descendants(int) []int { return nil }

// GroupMembers is only implemented on Linux.
func GroupMembers(int) []int { return nil }

// Identify is only implemented on Linux.
func Identify(int) (Identity, error) { return Identity{}, errors.ErrUnsupported }

// Check is only implemented on Linux.
func (Identity) Check() error { return errors.ErrUnsupported }

// Ours is only implemented on Linux; it reports false.
func (Identity) Ours() bool { return false }

// Signal is only implemented on Linux; it signals nothing.
func (Identity) Signal(syscall.Signal) error { return errors.ErrUnsupported }

// Stop is only implemented on Linux; it signals nothing.
func Stop(Identity, time.Duration) error { return errors.ErrUnsupported }
