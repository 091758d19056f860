// Package preflight decides, before anything is installed, whether a host can
// run a bundle: it reads the host (GPUs through NVML, memory, disk, CPU and
// kernel features through /proc and /sys), sizes the model against it, and
// reports each requirement with what was found and pass, warn or fail, plus
// the way out of every shortfall. It only reads the host; it never loads a
// module, changes a GPU setting or writes a file.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/host"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/sizing"
)

// DefaultStore is where install keeps the model store unless told otherwise.
const DefaultStore = "/var/lib/qwen-appliance"

// Options tune Run. The zero value checks the real host with the real NVML
// at the manifest's default context.
type Options struct {
	// NVML is the NVIDIA management library; the system's
	// (libnvidia-ml.so.1) when nil. Tests pass go-nvml's mock.
	NVML gpu.NVML
	// HostRoot is where /proc, /sys, /dev, /boot and /lib/modules are read
	// from; "/" when empty.
	HostRoot string
	// Store is the absolute path of the model store; DefaultStore when empty.
	Store string
	// Context is the context length to serve, in tokens; the runtime's
	// default context, else the model's maximum, when 0.
	Context int
	// Concurrency is how many sequences of Context tokens must fit at once;
	// 1 when 0.
	Concurrency int
}

// Status is the outcome of one check, and of the whole report.
type Status string

// Statuses, from best to worst.
const (
	Pass Status = "pass"
	Warn Status = "warn" // works, but not as asked, or with a risk the operator should know
	Fail Status = "fail" // the host does not meet the bundle's requirements
)

func (s Status) rank() int { return slices.Index([]Status{Pass, Warn, Fail}, s) }

// Check is one line of the report.
type Check struct {
	Name     string `json:"name"`
	Required string `json:"required"`
	Found    string `json:"found"`
	Status   Status `json:"status"`
	// Fix says how to get past a warning or failure, in numbers and flags.
	Fix string `json:"fix,omitempty"`
}

// Mode is where the model will run.
type Mode string

// Modes.
const (
	GPU Mode = "gpu"
	CPU Mode = "cpu"
)

// Report is the outcome of Run: every check, the plan the sizing model
// chose, and the facts it was decided on.
type Report struct {
	Bundle  string         `json:"bundle"`
	Version uint64         `json:"version"`
	Mode    Mode           `json:"mode"`
	Verdict Status         `json:"verdict"` // the worst status of all checks
	Checks  []Check        `json:"checks"`
	Plan    *sizing.Result `json:"plan,omitempty"`
	GPU     *gpu.Inventory `json:"gpu,omitempty"`
	Host    host.Facts     `json:"host"`
}

// Failed lists the checks that failed.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == Fail {
			out = append(out, c)
		}
	}
	return out
}

func (r *Report) add(c Check) {
	r.Checks = append(r.Checks, c)
	if r.Verdict == "" || c.Status.rank() > r.Verdict.rank() {
		r.Verdict = c.Status
	}
}

// ErrModelFacts is returned when the manifest lacks the model facts sizing
// needs (layers, heads, head dimension, weights size, context).
var ErrModelFacts = errors.New("manifest lacks model facts")

// ErrOptions is returned for an impossible request, such as a context
// longer than the model supports.
var ErrOptions = errors.New("invalid preflight options")

// Facts is what the host offered, as Evaluate judges it.
type Facts struct {
	GPU    gpu.Inventory
	GPUErr error // why GPU facts could not be read; nil when they were (or were not needed)
	Host   host.Facts
}

// Run reads the host and evaluates m against it. A host that does not meet
// the requirements is not an error: the report's Verdict is Fail. Run
// returns an error matching ErrModelFacts or ErrOptions when the request
// cannot be sized, and another error when the host could not be read at
// all.
func Run(ctx context.Context, m *manifests.Manifest, opts Options) (*Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if opts.HostRoot == "" {
		opts.HostRoot = "/"
	}
	if opts.Store == "" {
		opts.Store = DefaultStore
	}
	var f Facts
	hf, err := host.Probe(opts.HostRoot, opts.Store)
	if err != nil {
		return nil, fmt.Errorf("preflight: %w", err)
	}
	f.Host = hf
	if needsGPU(m) || canUseGPU(m) {
		f.GPU, f.GPUErr = gpu.Probe(opts.NVML)
	}
	return Evaluate(m, f, opts)
}

// needsGPU reports whether m can run only on an NVIDIA GPU: anything but a
// bundle with no accelerator requirement whose runtime lists "cpu".
func needsGPU(m *manifests.Manifest) bool {
	return !(m.Requirements.Accelerator == "" && slices.Contains(m.Runtime.Devices, "cpu"))
}

// canUseGPU reports whether a CPU-capable bundle could also use a GPU.
func canUseGPU(m *manifests.Manifest) bool {
	return slices.Contains(m.Runtime.Devices, "cuda")
}

// Evaluate judges facts against m. It is Run without reading the host.
func Evaluate(m *manifests.Manifest, f Facts, opts Options) (*Report, error) {
	if opts.Store == "" {
		opts.Store = DefaultStore
	}
	model, err := modelFacts(m)
	if err != nil {
		return nil, err
	}
	req, err := request(m, model, opts)
	if err != nil {
		return nil, err
	}
	r := &Report{Bundle: m.Name, Version: m.Version, Host: f.Host, Checks: []Check{}}

	gpuOK := f.GPUErr == nil && len(f.GPU.Devices) > 0
	switch {
	case needsGPU(m) || (canUseGPU(m) && gpuOK):
		r.Mode = GPU
		if f.GPUErr == nil {
			inv := f.GPU
			r.GPU = &inv
		}
		if err := checkGPUs(r, m, f, model, req); err != nil {
			return nil, err
		}
	default:
		r.Mode = CPU
		if canUseGPU(m) {
			found := "none usable"
			if f.GPUErr != nil {
				found = f.GPUErr.Error()
			}
			r.add(Check{Name: "NVIDIA GPU", Required: "optional (bundle also runs on CPU)", Found: found + "; serving on CPU", Status: Warn,
				Fix: "CPU inference is much slower; install the NVIDIA driver to use a GPU"})
		}
		if err := checkCPU(r, m, f, model, req); err != nil {
			return nil, err
		}
	}
	checkHost(r, m, f, opts.Store)
	return r, nil
}

// PlanGPUs returns the UUIDs of the GPUs in the plan, in the plan's order,
// and their /dev/nvidiaN minors when NVML named every one (nil otherwise: a
// unit then allows every NVIDIA GPU, and the server still sees only these).
// Both are nil without a GPU plan.
func (r *Report) PlanGPUs() (uuids []string, minors []int) {
	if r.Plan == nil || r.GPU == nil {
		return nil, nil
	}
	byIndex := map[int]gpu.Device{}
	for _, d := range r.GPU.Devices {
		byIndex[d.Index] = d
	}
	for _, i := range r.Plan.Devices {
		d, ok := byIndex[i]
		if !ok || d.UUID == "" {
			return nil, nil
		}
		uuids = append(uuids, d.UUID)
		if d.Minor != nil {
			minors = append(minors, *d.Minor)
		}
	}
	if len(minors) != len(uuids) {
		minors = nil
	}
	return uuids, minors
}
