// Package gpu reads what preflight needs to know about the host's NVIDIA GPUs
// through NVML: identity, memory, driver, health (ECC, retired pages, row
// remapping), MIG, thermals and the processes already running. It only
// reads; it never changes a GPU setting.
package gpu

import "errors"

// Library is the file name NVML is loaded from.
const Library = "libnvidia-ml.so.1"

// ErrNoDriver means the NVIDIA driver is absent: NVML's library could not be
// loaded, or it loaded and found no kernel driver.
var ErrNoDriver = errors.New("no NVIDIA driver found")

// ErrUnsupported means this build cannot read NVML at all: go-nvml is
// built for Linux only, so a binary for another system (a laptop running
// preflight or vet) cannot probe GPUs.
var ErrUnsupported = errors.New("NVML needs Linux")

// Inventory is everything Probe found.
type Inventory struct {
	DriverVersion     string   `json:"driverVersion"`
	CUDADriverVersion string   `json:"cudaDriverVersion,omitempty"` // e.g. "12.4"
	NVMLVersion       string   `json:"nvmlVersion,omitempty"`
	Devices           []Device `json:"devices"`
}

// Device is one GPU. Pointer and slice fields are nil when NVML does not
// support the query on this GPU (unknown, not a failure); a query that
// failed for another reason is named in Errors instead.
type Device struct {
	Index             int    `json:"index"`
	Name              string `json:"name"`
	UUID              string `json:"uuid"`
	PCIBusID          string `json:"pciBusId"`
	ComputeCapability string `json:"computeCapability"` // e.g. "9.0"
	// Minor is the N of the device node /dev/nvidiaN, which a systemd unit
	// allows by path; nil when NVML could not say.
	Minor *int `json:"minor"`

	MemoryTotal int64 `json:"memoryTotalBytes"`
	MemoryFree  int64 `json:"memoryFreeBytes"`
	MemoryUsed  int64 `json:"memoryUsedBytes"`

	ECCEnabled           *bool   `json:"eccEnabled"`
	ECCUncorrected       *uint64 `json:"eccVolatileUncorrected"` // since the last driver load
	RetiredPagesPending  *bool   `json:"retiredPagesPending"`
	RetiredPages         *int    `json:"retiredPages"`
	RowRemapPending      *bool   `json:"rowRemapPending"`
	RowRemapFailure      *bool   `json:"rowRemapFailure"`
	PersistenceMode      *bool   `json:"persistenceMode"`
	MIGEnabled           *bool   `json:"migEnabled"`
	TemperatureC         *int    `json:"temperatureC"`
	SlowdownTemperatureC *int    `json:"slowdownTemperatureC"`
	// ThrottleReasons names the active clock-event reasons (idle excluded).
	ThrottleReasons []string  `json:"throttleReasons"`
	Processes       []Process `json:"processes"`

	// Errors maps a fact (as named in this struct's JSON) to the NVML error
	// that prevented reading it.
	Errors map[string]string `json:"errors,omitempty"`
}

// Process is a process holding memory on a GPU.
type Process struct {
	PID        uint32 `json:"pid"`
	MemoryUsed int64  `json:"memoryUsedBytes"`
	Kind       string `json:"kind"` // compute | graphics
}

// ProcessMemory is the memory all listed processes hold.
func (d Device) ProcessMemory() int64 {
	var n int64
	for _, p := range d.Processes {
		n += p.MemoryUsed
	}
	return n
}
