package verify

import (
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu/gputest"
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
