//go:build !linux

package proc

import (
	"errors"
	"fmt"
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

// Identity names one process for its whole life (see the Linux version).
type Identity struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start,omitempty"`
	Boot  string `json:"boot,omitempty"`
}

// Mismatch explains why a recorded identity is not the process holding its
// PID (see the Linux version).
type Mismatch struct {
	ID     Identity
	Reason string
}

func (e *Mismatch) Error() string {
	return fmt.Sprintf("pid %d is not the process recorded (%s); not signalled", e.ID.PID, e.Reason)
}

// ErrGone is matched by the error of Check when the recorded process no
// longer runs at all.
var ErrGone = errors.New("process has exited")

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
