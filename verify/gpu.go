package verify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func init() {
	register(Check{
		ID: "gpu.health", Title: "GPUs report no uncorrected ECC errors, pending page retirement, row-remap failure or hardware throttling",
		Severity: Medium, Controls: []string{"SI-4"},
		Rationale:   "Memory errors and thermal or power slowdowns corrupt or stall inference; NVIDIA's own health checks use these signals.",
		Remediation: "Drain the host and follow NVIDIA's field diagnostics (reset the GPU to retire pages; check cooling and power); the evidence names the GPU.",
		Run:         checkGPU,
	}, Check{
		ID: "gpu.placement", Title: "the runtime sees and uses only the GPUs the preflight plan chose",
		Severity: Medium, Controls: []string{"CM-6", "SC-39"},
		Rationale:   "The plan sized the model for these GPUs; a server that also sees the others can spill onto GPUs another workload or tenant owns, or run out of memory on ones the plan never counted.",
		Remediation: "Re-run install (it passes run --gpus with the plan's UUIDs, and the unit allows only their device nodes); find out what else started the server.",
		Run:         checkGPUPlacement,
	})
}

// hardThrottles are the clock-event reasons that mean trouble rather than
// power management.
var hardThrottles = []string{"hw-slowdown", "hw-thermal-slowdown", "hw-power-brake", "sw-thermal-slowdown"}

func checkGPU(_ context.Context, t *Target) Outcome {
	inv, err := gpu.Probe(t.NVML)
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

func checkGPUPlacement(_ context.Context, t *Target) Outcome {
	if t.State == nil || len(t.State.Runtime.GPUs) == 0 {
		return notApplicable("install recorded no GPU plan (a CPU host)")
	}
	want := strings.Join(t.State.Runtime.GPUs, ",")
	var rt state.Service
	for _, s := range t.services() {
		if s.Name == "runtime" {
			rt = s
		}
	}
	evs := []Evidence{ev("plan", "%s", want)}
	if rt.PID == 0 {
		return fail("the runtime is not running", evs...)
	}
	servers := proc.Descendants(rt.PID)
	if len(servers) == 0 {
		return fail(fmt.Sprintf("no inference server process runs under the runtime supervisor (pid %d)", rt.PID), evs...)
	}
	tree := map[uint32]bool{uint32(rt.PID): true}
	var bad []string
	for _, pid := range servers {
		tree[uint32(pid)] = true
		env, err := procEnv(pid)
		if err != nil {
			continue // exited meanwhile
		}
		got, set := env["CUDA_VISIBLE_DEVICES"]
		evs = append(evs, ev(fmt.Sprintf("pid %d %s", pid, procName(pid)), "CUDA_VISIBLE_DEVICES=%q", got))
		if !set || got != want {
			bad = append(bad, fmt.Sprintf("pid %d sees CUDA_VISIBLE_DEVICES=%q, not the plan's", pid, got))
		}
	}
	// What NVML sees running: none of the runtime's processes on a GPU
	// outside the plan.
	inv, err := gpu.Probe(t.NVML)
	switch {
	case errors.Is(err, gpu.ErrNoDriver):
		evs = append(evs, ev("nvml", "no driver: placement shown by the environment only"))
	case err != nil:
		return errored(err)
	default:
		planned := map[string]bool{}
		for _, u := range t.State.Runtime.GPUs {
			planned[u] = true
		}
		for _, d := range inv.Devices {
			for _, p := range d.Processes {
				if !tree[p.PID] {
					continue
				}
				where := "in the plan"
				if !planned[d.UUID] {
					where = "OUTSIDE the plan"
					bad = append(bad, fmt.Sprintf("pid %d runs on GPU%d (%s), outside the plan", p.PID, d.Index, d.UUID))
				}
				evs = append(evs, ev(fmt.Sprintf("GPU%d", d.Index), "%s: runtime pid %d, %d MiB (%s)", d.UUID, p.PID, p.MemoryUsed>>20, where))
			}
		}
	}
	if len(bad) > 0 {
		return fail(strings.Join(bad, "; "), evs...)
	}
	return pass(fmt.Sprintf("%d server process(es) see only the plan's %d GPU(s)", len(servers), len(t.State.Runtime.GPUs)), evs...)
}
