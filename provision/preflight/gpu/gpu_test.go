//go:build linux

package gpu_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu/gputest"
)

func TestProbeDGX(t *testing.T) {
	for _, tc := range []struct {
		name     string
		host     *server.Server
		gpuName  string
		cc       string
		totalGiB int64
	}{
		{"DGX H100", gputest.DGXH100(), "NVIDIA H100 80GB HBM3", "9.0", 80},
		{"DGX H200", gputest.DGXH200(), "NVIDIA H200 141GB HBM3e", "9.0", 141},
		{"DGX A100", gputest.DGXA100(), "Mock NVIDIA A100-SXM4-40GB", "8.0", 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inv, err := gpu.Probe(tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if inv.DriverVersion != "550.54.15" || inv.CUDADriverVersion != "12.4" {
				t.Errorf("driver %q CUDA %q, want 550.54.15 and 12.4", inv.DriverVersion, inv.CUDADriverVersion)
			}
			if len(inv.Devices) != 8 {
				t.Fatalf("%d devices, want 8", len(inv.Devices))
			}
			for i, d := range inv.Devices {
				if d.Index != i || d.ComputeCapability != tc.cc || d.MemoryTotal != tc.totalGiB<<30 {
					t.Errorf("GPU%d: index %d cc %s total %d, want cc %s total %d GiB", i, d.Index, d.ComputeCapability, d.MemoryTotal, tc.cc, tc.totalGiB)
				}
				if !strings.HasPrefix(d.UUID, "GPU-") || d.PCIBusID == "" {
					t.Errorf("GPU%d: uuid %q bus %q", i, d.UUID, d.PCIBusID)
				}
				if d.ECCEnabled == nil || !*d.ECCEnabled || d.ECCUncorrected == nil || *d.ECCUncorrected != 0 {
					t.Errorf("GPU%d: ECC facts %v %v", i, d.ECCEnabled, d.ECCUncorrected)
				}
				// Ampere and Hopper remap rows; page retirement is unknown.
				if d.RetiredPagesPending != nil || d.RowRemapFailure == nil || *d.RowRemapFailure {
					t.Errorf("GPU%d: retirement %v remap %v", i, d.RetiredPagesPending, d.RowRemapFailure)
				}
				if d.MIGEnabled == nil || *d.MIGEnabled || len(d.Errors) != 0 || d.Processes == nil {
					t.Errorf("GPU%d: mig %v errors %v processes %v", i, d.MIGEnabled, d.Errors, d.Processes)
				}
			}
		})
	}
}

func TestProbeNames(t *testing.T) {
	inv, err := gpu.Probe(gputest.DGXH100())
	if err != nil {
		t.Fatal(err)
	}
	// go-nvml's H100 config; pin it so a module upgrade that renames it is seen.
	if got := inv.Devices[0].Name; !strings.Contains(got, "H100") {
		t.Errorf("name %q", got)
	}
}

func TestProbeGeForce(t *testing.T) {
	inv, err := gpu.Probe(gputest.Host(gputest.RTX3060, gputest.RTX4090))
	if err != nil {
		t.Fatal(err)
	}
	d := inv.Devices[1]
	if d.Name != "NVIDIA GeForce RTX 4090" || d.ComputeCapability != "8.9" || d.MemoryTotal != 24564<<20 {
		t.Fatalf("got %+v", d)
	}
	// GeForce cards have no ECC and no MIG: unknown, not errors.
	if d.ECCEnabled != nil || d.MIGEnabled != nil || len(d.Errors) != 0 {
		t.Fatalf("ecc %v mig %v errors %v", d.ECCEnabled, d.MIGEnabled, d.Errors)
	}
	if d.PCIBusID != "0000:01:00.0" {
		t.Errorf("bus id %q", d.PCIBusID)
	}
}

func TestProbeTuringRetiredPages(t *testing.T) {
	s := gputest.Host(gputest.T4)
	d := s.Devices[0].(*server.Device)
	d.GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_ENABLED, nvml.SUCCESS }
	d.GetRetiredPagesFunc = func(c nvml.PageRetirementCause) ([]uint64, nvml.Return) {
		if c == nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR {
			return []uint64{0x1000, 0x2000}, nvml.SUCCESS
		}
		return []uint64{0x3000}, nvml.SUCCESS
	}
	inv, err := gpu.Probe(s)
	if err != nil {
		t.Fatal(err)
	}
	got := inv.Devices[0]
	if got.RetiredPagesPending == nil || !*got.RetiredPagesPending || got.RetiredPages == nil || *got.RetiredPages != 3 {
		t.Fatalf("pending %v pages %v", got.RetiredPagesPending, got.RetiredPages)
	}
	if got.RowRemapPending != nil {
		t.Errorf("Turing has no row remapping, got %v", *got.RowRemapPending)
	}
}

func TestProbeBusy(t *testing.T) {
	s := gputest.Host(gputest.RTX4090)
	gputest.Busy(s.Devices[0].(*server.Device), 4242, 6<<30)
	inv, err := gpu.Probe(s)
	if err != nil {
		t.Fatal(err)
	}
	d := inv.Devices[0]
	if len(d.Processes) != 1 || d.Processes[0].PID != 4242 || d.ProcessMemory() != 6<<30 || d.MemoryUsed != 6<<30 {
		t.Fatalf("processes %+v used %d", d.Processes, d.MemoryUsed)
	}
}

func TestProbeNoDriver(t *testing.T) {
	_, err := gpu.Probe(gputest.Missing())
	if !errors.Is(err, gpu.ErrNoDriver) || !strings.Contains(err.Error(), "libnvidia-ml.so.1") {
		t.Fatalf("err = %v, want ErrNoDriver naming libnvidia-ml.so.1", err)
	}
	_, err = gpu.Probe(&mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }})
	if !errors.Is(err, gpu.ErrNoDriver) || !strings.Contains(err.Error(), "kernel module") {
		t.Fatalf("err = %v, want ErrNoDriver about the kernel module", err)
	}
	_, err = gpu.Probe(&mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_NO_PERMISSION }})
	if err == nil || errors.Is(err, gpu.ErrNoDriver) {
		t.Fatalf("err = %v, want a plain init error", err)
	}
}

// TestProbeRealLibrary runs the real NVML binding. Without a driver it must
// say so by name; with one (a GPU host), it must find at least one GPU.
func TestProbeRealLibrary(t *testing.T) {
	inv, err := gpu.Probe(nvml.New())
	if errors.Is(err, gpu.ErrNoDriver) {
		if !strings.Contains(err.Error(), "no NVIDIA driver found (looked for libnvidia-ml.so.1)") {
			t.Fatalf("err = %v", err)
		}
		t.Logf("no driver on this host: %v", err)
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("driver %s, %d GPUs", inv.DriverVersion, len(inv.Devices))
	for _, d := range inv.Devices {
		if d.MemoryTotal == 0 || d.Name == "" {
			t.Errorf("GPU%d: %+v", d.Index, d)
		}
	}
}

func TestProbeQueryErrors(t *testing.T) {
	for _, tc := range []struct {
		method string
		fact   string
	}{
		{"GetMemoryInfo", "memoryTotalBytes"},
		{"GetTotalEccErrors", "eccVolatileUncorrected"},
		{"GetTemperature", "temperatureC"},
	} {
		s := gputest.Host(gputest.A100PCIe40GB)
		gputest.Replace(s, 0, gputest.Failing{Device: s.Devices[0], Method: tc.method, Ret: nvml.ERROR_GPU_IS_LOST})
		inv, err := gpu.Probe(s)
		if err != nil {
			t.Fatalf("%s: %v", tc.method, err)
		}
		if got := inv.Devices[0].Errors[tc.fact]; got != "ERROR_GPU_IS_LOST" {
			t.Errorf("%s: errors %v, want %s: ERROR_GPU_IS_LOST", tc.method, inv.Devices[0].Errors, tc.fact)
		}
	}
	// NOT_SUPPORTED is unknown, never an error.
	s := gputest.Host(gputest.A100PCIe40GB)
	gputest.Replace(s, 0, gputest.Failing{Device: s.Devices[0], Method: "GetTemperature", Ret: nvml.ERROR_NOT_SUPPORTED})
	inv, err := gpu.Probe(s)
	if err != nil || len(inv.Devices[0].Errors) != 0 || inv.Devices[0].TemperatureC != nil {
		t.Fatalf("err %v errors %v temp %v", err, inv.Devices[0].Errors, inv.Devices[0].TemperatureC)
	}
}

func TestProbeCountError(t *testing.T) {
	s := gputest.Host(gputest.A10)
	s.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
	if _, err := gpu.Probe(s); err == nil || !strings.Contains(err.Error(), "count GPUs") {
		t.Fatalf("err = %v", err)
	}
}

func TestThrottleReasons(t *testing.T) {
	got := gpu.ThrottleReasons(nvml.ClocksEventReasonGpuIdle | nvml.ClocksThrottleReasonHwThermalSlowdown | nvml.ClocksEventReasonSwPowerCap)
	if strings.Join(got, ",") != "sw-power-cap,hw-thermal-slowdown" {
		t.Fatalf("got %v", got)
	}
	if got := gpu.ThrottleReasons(nvml.ClocksEventReasonGpuIdle); len(got) != 0 {
		t.Fatalf("idle reported as %v", got)
	}
}
