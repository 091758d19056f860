package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
)

func init() {
	register(Check{
		ID: "gpu.health", Title: "GPUs report no uncorrected ECC errors, pending page retirement, row-remap failure or hardware throttling",
		Severity: Medium, Controls: []string{"SI-4"},
		Rationale:   "Memory errors and thermal or power slowdowns corrupt or stall inference; NVIDIA's own health checks use these signals.",
		Remediation: "Drain the host and follow NVIDIA's field diagnostics (reset the GPU to retire pages; check cooling and power); the evidence names the GPU.",
		Run:         checkGPU,
	})
}

// hardThrottles are the clock-event reasons that mean trouble rather than
// power management.
var hardThrottles = []string{"hw-slowdown", "hw-thermal-slowdown", "hw-power-brake", "sw-thermal-slowdown"}

func checkGPU(_ context.Context, t *Target) Outcome {
	lib := t.NVML
	if lib == nil {
		lib = nvml.New()
	}
	inv, err := gpu.Probe(lib)
	if errors.Is(err, gpu.ErrNoDriver) {
		return notApplicable("no NVIDIA driver on this host (" + gpu.Library + " not found)")
	}
	if err != nil {
		return errored(err)
	}
	evs := []Evidence{ev("driver", "%s (CUDA %s)", inv.DriverVersion, inv.CUDADriverVersion)}
	var bad []string
	for _, d := range inv.Devices {
		name := fmt.Sprintf("GPU%d %s", d.Index, d.Name)
		evs = append(evs, ev(name, "%s, %d MiB total, %d MiB used", d.UUID, d.MemoryTotal>>20, d.MemoryUsed>>20))
		if d.ECCUncorrected != nil && *d.ECCUncorrected > 0 {
			bad = append(bad, fmt.Sprintf("%s: %d volatile uncorrected ECC errors", name, *d.ECCUncorrected))
		}
		if d.RetiredPagesPending != nil && *d.RetiredPagesPending {
			bad = append(bad, name+": retired pages pending (reset the GPU)")
		}
		if d.RowRemapFailure != nil && *d.RowRemapFailure {
			bad = append(bad, name+": row-remap failure")
		}
		for _, r := range d.ThrottleReasons {
			for _, h := range hardThrottles {
				if strings.Contains(r, h) {
					bad = append(bad, name+": throttled: "+r)
				}
			}
		}
	}
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "), evs...)
	}
	return pass(fmt.Sprintf("%d GPU(s) healthy", len(inv.Devices)), evs...)
}
