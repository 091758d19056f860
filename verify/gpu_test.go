//go:build linux

package verify

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/qwen-appliance/qwen-appliance/internal/proc"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu/gputest"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

func TestGPUHealth(t *testing.T) {
	expect(t, runOne(t, "gpu.health", &Target{NVML: gputest.Missing()}), NotApplicable, "no NVIDIA driver")
	expect(t, runOne(t, "gpu.health", &Target{NVML: gputest.DGXH100()}), Pass, "8 GPU(s) healthy")

	s := gputest.DGXH100()
	s.Devices[3].(*server.Device).GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
		return 2, nvml.SUCCESS
	}
	expect(t, runOne(t, "gpu.health", &Target{NVML: s}), Fail, "GPU3 NVIDIA H100 80GB HBM3: 2 volatile uncorrected ECC errors")

	s = gputest.DGXH100()
	s.Devices[0].(*server.Device).GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
	expect(t, runOne(t, "gpu.health", &Target{NVML: s}), Fail, "retired pages pending")
}

// TestGPUPlacement runs a stand-in runtime (a supervisor shell and a server
// child with an environment) against go-nvml's DGX H100 with a plan of GPUs
// 0 and 1: it passes when the server sees exactly those and runs on them,
// and fails when it sees others or NVML shows it on a GPU outside the plan.
func TestGPUPlacement(t *testing.T) {
	s := gputest.DGXH100()
	uuid := func(i int) string { u, _ := s.Devices[i].GetUUID(); return u }
	plan := []string{uuid(0), uuid(1)}
	start := func(visible string) int {
		cmd := exec.Command("/bin/sh", "-c", "sleep 60 & wait")
		cmd.Env = []string{"PATH=/usr/bin:/bin", "CUDA_VISIBLE_DEVICES=" + visible}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for range 100 {
			if len(proc.Descendants(cmd.Process.Pid)) > 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return cmd.Process.Pid
	}
	target := func(pid int) *Target {
		return &Target{NVML: s, State: &state.State{Runtime: state.Service{Name: "runtime", PID: pid, GPUs: plan}}}
	}
	expect(t, runOne(t, "gpu.placement", &Target{NVML: s, State: &state.State{Runtime: state.Service{Name: "runtime", PID: 1}}}), NotApplicable, "no GPU plan")

	good := start(strings.Join(plan, ","))
	srv := uint32(proc.Descendants(good)[0])
	gputest.Busy(s.Devices[1].(*server.Device), srv, 30<<30)
	expect(t, runOne(t, "gpu.placement", target(good)), Pass, "see only the plan's 2 GPU(s)")

	gputest.Busy(s.Devices[5].(*server.Device), srv, 30<<30)
	expect(t, runOne(t, "gpu.placement", target(good)), Fail, "runs on GPU5 ("+uuid(5)+"), outside the plan")

	s = gputest.DGXH100()
	wide := start(strings.Join(append(plan, uuid(2)), ","))
	expect(t, runOne(t, "gpu.placement", target(wide)), Fail, "not the plan's")
	expect(t, runOne(t, "gpu.placement", target(0)), Fail, "the runtime is not running")
}
