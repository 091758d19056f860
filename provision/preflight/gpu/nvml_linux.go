//go:build linux

package gpu

import (
	"fmt"
	"strings"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the NVIDIA management library Probe reads: go-nvml's interface,
// so tests pass its mock servers (see gputest).
type NVML = nvml.Interface

// Probe initializes lib (the system's NVML, loaded from Library, when nil),
// reads every GPU and shuts lib down again. It returns an error matching
// ErrNoDriver when the library or the kernel driver is missing, and another
// error when NVML cannot even count the GPUs. Failures of single queries are
// recorded in Device.Errors, not returned.
func Probe(lib NVML) (inv Inventory, err error) {
	if lib == nil {
		lib = nvml.New()
	}
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return inv, fmt.Errorf("%w (looked for %s)", ErrNoDriver, Library)
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return inv, fmt.Errorf("%w: %s is installed but the nvidia kernel module is not loaded", ErrNoDriver, Library)
	default:
		return inv, fmt.Errorf("initialize NVML: %s", describe(ret))
	}
	defer func() {
		if ret := lib.Shutdown(); ret != nvml.SUCCESS && err == nil {
			err = fmt.Errorf("shut down NVML: %s", describe(ret))
		}
	}()

	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		inv.DriverVersion = v
	} else {
		return inv, fmt.Errorf("read driver version: %s", describe(ret))
	}
	if v, ret := lib.SystemGetCudaDriverVersion(); ret == nvml.SUCCESS {
		inv.CUDADriverVersion = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	if v, ret := lib.SystemGetNVMLVersion(); ret == nvml.SUCCESS {
		inv.NVMLVersion = v
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return inv, fmt.Errorf("count GPUs: %s", describe(ret))
	}
	events := eventReasonsSupported(lib)
	inv.Devices = []Device{}
	for i := range n {
		d := Device{Index: i}
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			d.fail("handle", ret)
			inv.Devices = append(inv.Devices, d)
			continue
		}
		read(&d, h, events)
		inv.Devices = append(inv.Devices, d)
	}
	return inv, nil
}

// eventReasonsSupported reports whether the driver has the newer name for
// the throttle-reason query (r535 and later); older drivers only have
// nvmlDeviceGetCurrentClocksThrottleReasons.
func eventReasonsSupported(lib nvml.Interface) bool {
	ext := lib.Extensions()
	return ext != nil && ext.LookupSymbol("nvmlDeviceGetCurrentClocksEventReasons") == nil
}

// fail records a failed query; NOT_SUPPORTED is not a failure.
func (d *Device) fail(fact string, ret nvml.Return) {
	if ret == nvml.ERROR_NOT_SUPPORTED {
		return
	}
	if d.Errors == nil {
		d.Errors = map[string]string{}
	}
	d.Errors[fact] = describe(ret)
}

func read(d *Device, h nvml.Device, events bool) {
	var ret nvml.Return
	if d.Name, ret = h.GetName(); ret != nvml.SUCCESS {
		d.fail("name", ret)
	}
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		d.fail("uuid", ret)
	}
	if pci, ret := h.GetPciInfo(); ret == nvml.SUCCESS {
		d.PCIBusID = cString(pci.BusId[:])
	} else {
		d.fail("pciBusId", ret)
	}
	if major, minor, ret := h.GetCudaComputeCapability(); ret == nvml.SUCCESS {
		d.ComputeCapability = fmt.Sprintf("%d.%d", major, minor)
	} else {
		d.fail("computeCapability", ret)
	}
	if mem, ret := h.GetMemoryInfo(); ret == nvml.SUCCESS {
		d.MemoryTotal, d.MemoryFree, d.MemoryUsed = int64(mem.Total), int64(mem.Free), int64(mem.Used)
	} else {
		d.fail("memoryTotalBytes", ret)
	}
	if current, _, ret := h.GetEccMode(); ret == nvml.SUCCESS {
		d.ECCEnabled = ptr(current == nvml.FEATURE_ENABLED)
	} else {
		d.fail("eccEnabled", ret)
	}
	if d.ECCEnabled != nil && *d.ECCEnabled {
		if n, ret := h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC); ret == nvml.SUCCESS {
			d.ECCUncorrected = &n
		} else {
			d.fail("eccVolatileUncorrected", ret)
		}
	}
	// Page retirement is the pre-Ampere mechanism; Ampere and later remap
	// rows instead and answer NOT_SUPPORTED here.
	if st, ret := h.GetRetiredPagesPendingStatus(); ret == nvml.SUCCESS {
		d.RetiredPagesPending = ptr(st == nvml.FEATURE_ENABLED)
		total := 0
		for _, cause := range []nvml.PageRetirementCause{nvml.PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS, nvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR} {
			pages, ret := h.GetRetiredPages(cause)
			if ret != nvml.SUCCESS {
				d.fail("retiredPages", ret)
				total = -1
				break
			}
			total += len(pages)
		}
		if total >= 0 {
			d.RetiredPages = &total
		}
	} else {
		d.fail("retiredPagesPending", ret)
	}
	if _, _, pending, failed, ret := h.GetRemappedRows(); ret == nvml.SUCCESS {
		d.RowRemapPending, d.RowRemapFailure = &pending, &failed
	} else {
		d.fail("rowRemapPending", ret)
	}
	if n, ret := h.GetMinorNumber(); ret == nvml.SUCCESS {
		d.Minor = &n
	} else {
		d.fail("minor", ret)
	}
	if st, ret := h.GetPersistenceMode(); ret == nvml.SUCCESS {
		d.PersistenceMode = ptr(st == nvml.FEATURE_ENABLED)
	} else {
		d.fail("persistenceMode", ret)
	}
	if current, _, ret := h.GetMigMode(); ret == nvml.SUCCESS {
		d.MIGEnabled = ptr(current == nvml.DEVICE_MIG_ENABLE)
	} else {
		d.fail("migEnabled", ret)
	}
	if t, ret := h.GetTemperature(nvml.TEMPERATURE_GPU); ret == nvml.SUCCESS {
		d.TemperatureC = ptr(int(t))
	} else {
		d.fail("temperatureC", ret)
	}
	if t, ret := h.GetTemperatureThreshold(nvml.TEMPERATURE_THRESHOLD_SLOWDOWN); ret == nvml.SUCCESS {
		d.SlowdownTemperatureC = ptr(int(t))
	} else {
		d.fail("slowdownTemperatureC", ret)
	}
	var reasons uint64
	if events {
		reasons, ret = h.GetCurrentClocksEventReasons()
	} else {
		reasons, ret = h.GetCurrentClocksThrottleReasons()
	}
	if ret == nvml.SUCCESS {
		d.ThrottleReasons = ThrottleReasons(reasons)
	} else {
		d.fail("throttleReasons", ret)
	}
	d.readProcesses(h)
}

func (d *Device) readProcesses(h nvml.Device) {
	compute, ret := h.GetComputeRunningProcesses()
	if ret != nvml.SUCCESS {
		d.fail("processes", ret)
		return
	}
	graphics, ret := h.GetGraphicsRunningProcesses()
	if ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED {
		d.fail("processes", ret)
		return
	}
	d.Processes = []Process{}
	seen := map[uint32]bool{}
	for _, list := range []struct {
		kind  string
		procs []nvml.ProcessInfo
	}{{"compute", compute}, {"graphics", graphics}} {
		for _, p := range list.procs {
			if seen[p.Pid] {
				continue
			}
			seen[p.Pid] = true
			used := int64(p.UsedGpuMemory)
			// NVML reports "not available" (in some containers and under
			// Windows WDDM) as all ones.
			if p.UsedGpuMemory == ^uint64(0) {
				used = 0
			}
			d.Processes = append(d.Processes, Process{PID: p.Pid, MemoryUsed: used, Kind: list.kind})
		}
	}
}

// throttleNames are the clock-event reasons worth telling an operator about.
// Idle, application clock settings and sync boost are normal.
var throttleNames = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksEventReasonSwPowerCap, "sw-power-cap"},
	{nvml.ClocksThrottleReasonHwSlowdown, "hw-slowdown"},
	{nvml.ClocksEventReasonSwThermalSlowdown, "sw-thermal-slowdown"},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, "hw-thermal-slowdown"},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "hw-power-brake"},
}

// ThrottleReasons names the concerning bits of an NVML clock-event mask.
func ThrottleReasons(mask uint64) []string {
	out := []string{}
	for _, t := range throttleNames {
		if mask&t.bit != 0 {
			out = append(out, t.name)
		}
	}
	return out
}

// describe turns an NVML return code into text. nvml.Return's own Error
// text comes from the loaded library and falls back to the constant's name.
func describe(ret nvml.Return) string {
	return ret.Error()
}

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func ptr[T any](v T) *T { return &v }
