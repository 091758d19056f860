//go:build !linux

package gpu_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
)

// Off Linux there is no NVML to load: Probe says so instead of reporting a
// missing driver.
func TestProbeUnsupported(t *testing.T) {
	_, err := gpu.Probe(nil)
	if !errors.Is(err, gpu.ErrUnsupported) || errors.Is(err, gpu.ErrNoDriver) || !strings.Contains(err.Error(), "NVML needs Linux") {
		t.Fatalf("Probe(nil) = %v, want ErrUnsupported", err)
	}
}
