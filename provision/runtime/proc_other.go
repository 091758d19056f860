//go:build !linux

package runtime

import (
	"errors"
	"os/exec"
	"syscall"
)

func setProcessGroup(*exec.Cmd, bool) {}

func signalGroup(int, syscall.Signal) error { return errors.ErrUnsupported }

// GroupMembers is only implemented on Linux.
func GroupMembers(int) []int { return nil }
