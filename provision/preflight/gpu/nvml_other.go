//go:build !linux

package gpu

import (
	"fmt"
	"runtime"
)

// NVML stands in for go-nvml's interface, which is built for Linux only;
// the only value a caller can pass here is nil.
type NVML interface{ linuxOnly() }

// Probe returns an error matching ErrUnsupported: GPUs cannot be probed
// from a build for another system.
func Probe(NVML) (Inventory, error) {
	return Inventory{}, fmt.Errorf("cannot probe GPUs from a %s build: %w", runtime.GOOS, ErrUnsupported)
}
