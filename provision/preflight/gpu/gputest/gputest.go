//go:build linux

// Package gputest builds NVML hosts for tests from go-nvml's mock package:
// its DGX servers and single cards it does not ship (RTX 3060, RTX 4090, A10),
// with every query gpu.Probe makes answered as a healthy, idle GPU would,
// and wrappers that inject one fault each. It is imported by tests only.
package gputest

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// Cards the mock package does not ship. Memory sizes are what nvidia-smi
// reports as memory.total on these boards.
var (
	RTX3060 = gpus.Config{
		Name: "NVIDIA GeForce RTX 3060", Architecture: nvml.DEVICE_ARCH_AMPERE, Brand: nvml.BRAND_GEFORCE,
		MemoryMB: 12288, CudaMajor: 8, CudaMinor: 6, PciDeviceId: 0x250310DE,
	}
	RTX4090 = gpus.Config{
		Name: "NVIDIA GeForce RTX 4090", Architecture: nvml.DEVICE_ARCH_ADA, Brand: nvml.BRAND_GEFORCE,
		MemoryMB: 24564, CudaMajor: 8, CudaMinor: 9, PciDeviceId: 0x268410DE,
	}
	A10 = gpus.Config{
		Name: "NVIDIA A10", Architecture: nvml.DEVICE_ARCH_AMPERE, Brand: nvml.BRAND_NVIDIA,
		MemoryMB: 23028, CudaMajor: 8, CudaMinor: 6, PciDeviceId: 0x223610DE,
	}
	A100PCIe40GB = gpus.A100_PCIE_40GB
	// T4 has compute capability 7.5: no bf16.
	T4 = gpus.Config{
		Name: "Tesla T4", Architecture: nvml.DEVICE_ARCH_TURING, Brand: nvml.BRAND_TESLA,
		MemoryMB: 15360, CudaMajor: 7, CudaMinor: 5, PciDeviceId: 0x1EB810DE,
	}
)

// Driver is the driver the single-card hosts report.
const Driver = "550.54.15"

// Host returns an NVML host with one GPU per config, healthy and idle.
func Host(configs ...gpus.Config) *server.Server {
	s := server.NewServerWithGPUs(Driver, "12."+Driver, 12040, configs...)
	for _, d := range s.Devices {
		Healthy(d.(*server.Device))
	}
	return s
}

// DGXH100 is go-nvml's DGX H100 (8× H100 80 GB) with healthy devices.
func DGXH100() *server.Server { return healthyAll(dgxh100.New()) }

// DGXH200 is go-nvml's DGX H200 (8× H200 141 GB) with healthy devices.
func DGXH200() *server.Server { return healthyAll(dgxh200.New()) }

// DGXA100 is go-nvml's DGX A100 (8× A100 40 GB) with healthy devices.
func DGXA100() *server.Server { return healthyAll(dgxa100.New()) }

func healthyAll(s *server.Server) *server.Server {
	for _, d := range s.Devices {
		Healthy(d.(*server.Device))
	}
	return s
}

// Healthy answers every query gpu.Probe makes the way an idle, healthy GPU
// does: ECC on with no errors, no pending page retirement or row remapping,
// persistence on, 35 °C against an 87 °C slowdown threshold, only the idle
// clock reason, no processes, and all memory free. Ampere and later GPUs
// answer NOT_SUPPORTED for page retirement, as real ones do.
func Healthy(d *server.Device) {
	d.MemoryInfo = nvml.Memory{Total: d.Config.MemoryMB << 20, Free: d.Config.MemoryMB << 20}
	d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
		p := nvml.PciInfo{PciDeviceId: d.Config.PciDeviceId, Bus: uint32(d.Index)}
		copy(p.BusId[:], cChars(d.PciBusID))
		return p, nvml.SUCCESS
	}
	d.GetEccModeFunc = func() (nvml.EnableState, nvml.EnableState, nvml.Return) {
		if d.Config.Brand == nvml.BRAND_GEFORCE {
			return 0, 0, nvml.ERROR_NOT_SUPPORTED
		}
		return nvml.FEATURE_ENABLED, nvml.FEATURE_ENABLED, nvml.SUCCESS
	}
	d.GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
		return 0, nvml.SUCCESS
	}
	retirement := d.Config.Architecture < nvml.DEVICE_ARCH_AMPERE
	d.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) {
		if !retirement {
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		return nvml.FEATURE_DISABLED, nvml.SUCCESS
	}
	d.GetRetiredPagesFunc = func(nvml.PageRetirementCause) ([]uint64, nvml.Return) {
		if !retirement {
			return nil, nvml.ERROR_NOT_SUPPORTED
		}
		return nil, nvml.SUCCESS
	}
	d.GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) {
		if retirement {
			return 0, 0, false, false, nvml.ERROR_NOT_SUPPORTED
		}
		return 0, 0, false, false, nvml.SUCCESS
	}
	d.GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
	d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 35, nvml.SUCCESS }
	d.GetTemperatureThresholdFunc = func(nvml.TemperatureThresholds) (uint32, nvml.Return) { return 87, nvml.SUCCESS }
	d.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return nvml.ClocksEventReasonGpuIdle, nvml.SUCCESS }
	d.GetCurrentClocksThrottleReasonsFunc = d.GetCurrentClocksEventReasonsFunc
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	d.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	if d.Config.MIGProfiles.GpuInstanceProfiles == nil {
		d.GetMigModeFunc = func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED }
	}
}

func cChars(s string) []int8 {
	out := make([]int8, len(s))
	for i := range len(s) {
		out[i] = int8(s[i])
	}
	return out
}

// Busy makes another process hold used bytes on d, as a second model
// server or a desktop session would.
func Busy(d *server.Device, pid uint32, used uint64) {
	d.MemoryInfo.Used += used
	d.MemoryInfo.Free -= used
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: pid, UsedGpuMemory: used}}, nvml.SUCCESS
	}
}

// Missing is an NVML whose library cannot be loaded, as on a host without
// the NVIDIA driver: Init fails the way nvml.New().Init() does there.
func Missing() nvml.Interface {
	return &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }}
}

// Failing wraps an NVML host so that one device query returns an error. It
// embeds the device and overrides one method, the way the k8s device
// plugin's health tests do.
type Failing struct {
	nvml.Device
	Method string      // the overridden query: GetMemoryInfo, GetTotalEccErrors, GetTemperature
	Ret    nvml.Return // what it returns
}

// GetMemoryInfo fails when Method says so.
func (f Failing) GetMemoryInfo() (nvml.Memory, nvml.Return) {
	if f.Method == "GetMemoryInfo" {
		return nvml.Memory{}, f.Ret
	}
	return f.Device.GetMemoryInfo()
}

// GetTotalEccErrors fails when Method says so.
func (f Failing) GetTotalEccErrors(t nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
	if f.Method == "GetTotalEccErrors" {
		return 0, f.Ret
	}
	return f.Device.GetTotalEccErrors(t, c)
}

// GetTemperature fails when Method says so.
func (f Failing) GetTemperature(s nvml.TemperatureSensors) (uint32, nvml.Return) {
	if f.Method == "GetTemperature" {
		return 0, f.Ret
	}
	return f.Device.GetTemperature(s)
}

// Replace puts dev in place of device i of s.
func Replace(s *server.Server, i int, dev nvml.Device) {
	if i >= len(s.Devices) {
		panic(fmt.Sprintf("gputest: no device %d", i))
	}
	s.Devices[i] = dev
}
