package preflight

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/host"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/sizing"
)

// maxRetiredPages is where NVIDIA's field guidance starts treating retired
// pages as a failing board.
const maxRetiredPages = 10

// thermalMargin is how close to the slowdown threshold a GPU may idle before
// preflight warns.
const thermalMargin = 5

// checkGPUs adds the driver, per-GPU health, kernel module and sizing lines.
func checkGPUs(r *Report, m *manifests.Manifest, f Facts, model sizing.Model, req sizing.Request) error {
	req2 := m.Requirements
	driverReq := "NVIDIA driver"
	if req2.MinDriverVersion != "" {
		driverReq = "NVIDIA driver " + req2.MinDriverVersion + " or later"
	}
	if f.GPUErr != nil {
		c := Check{Name: "NVIDIA driver", Required: driverReq, Found: f.GPUErr.Error(), Status: Fail}
		switch {
		case errors.Is(f.GPUErr, gpu.ErrNoDriver):
			c.Fix = "install the NVIDIA driver (it provides " + gpu.Library + " and the nvidia kernel module), or use a CPU bundle"
		case errors.Is(f.GPUErr, gpu.ErrUnsupported):
			c.Fix = "run preflight on the Linux GPU host itself"
		default:
			c.Fix = "check the driver with nvidia-smi; preflight needs NVML to answer"
		}
		r.add(c)
		checkModules(r, f)
		return nil
	}
	inv := f.GPU
	c := Check{Name: "NVIDIA driver", Required: driverReq, Found: inv.DriverVersion, Status: Pass}
	if inv.CUDADriverVersion != "" {
		c.Found += ", CUDA " + inv.CUDADriverVersion
	}
	if req2.MinDriverVersion != "" && compareVersions(inv.DriverVersion, req2.MinDriverVersion) < 0 {
		c.Status, c.Fix = Fail, "upgrade the NVIDIA driver to "+req2.MinDriverVersion+" or later"
	}
	r.add(c)
	if len(inv.Devices) == 0 {
		r.add(Check{Name: "GPUs", Required: "at least 1 NVIDIA GPU", Found: "none (NVML lists no device)", Status: Fail,
			Fix: "check that the GPU is seated and visible in lspci, and that the driver supports it"})
		checkModules(r, f)
		return nil
	}

	var usable []gpu.Device
	for _, d := range inv.Devices {
		if healthy := checkDevice(r, d, req2.MinComputeCapability); healthy {
			usable = append(usable, d)
		}
	}
	checkModules(r, f)
	if len(usable) == 0 {
		r.add(Check{Name: "model memory", Required: "at least 1 healthy GPU", Found: "none of the GPUs above is usable", Status: Fail,
			Fix: "fix the GPU failures above"})
		return nil
	}
	devs := make([]sizing.Device, len(usable))
	byIndex := map[int]gpu.Device{}
	for i, d := range usable {
		devs[i] = sizing.Device{Index: d.Index, Total: d.MemoryTotal, Used: d.MemoryUsed}
		byIndex[d.Index] = d
	}
	res, err := sizing.Plan(model, req, devs)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrModelFacts, err)
	}
	r.Plan = &res
	if res.Verdict != sizing.DoesNotFit {
		excludeFailed(r, res.Devices)
	}
	lim := byIndex[res.Limiting]
	r.add(memoryCheck(m, res, req, GPU, fmt.Sprintf("GPU%d", lim.Index), lim.MemoryTotal, lim.MemoryUsed))
	r.add(tpCheck(model, res, len(usable)))
	if strings.EqualFold(m.Runtime.Kind, "vllm") {
		r.add(vllmStartCheck(model, req, res, byIndex))
	}
	if req2.MinVRAMBytes > 0 {
		var total int64
		for _, i := range res.Devices {
			total += byIndex[i].MemoryTotal
		}
		c := Check{Name: "GPU memory (total)", Required: sizing.Bytes(req2.MinVRAMBytes) + " over the GPUs used",
			Found: fmt.Sprintf("%s on %d GPU(s)", sizing.Bytes(total), len(res.Devices)), Status: Pass}
		if total < req2.MinVRAMBytes {
			c.Status, c.Fix = Fail, "the bundle asks for more GPU memory than the GPUs in use have; add GPUs or use a smaller bundle"
		}
		r.add(c)
	}
	return nil
}

// vllmStartCheck applies vLLM's start-up rule (vllm/v1/worker/gpu_worker.py,
// init_device): it refuses to start when a GPU's free memory is below
// gpu-memory-utilization × total, however small the model. Other processes
// on a planned GPU can therefore stop vLLM even when the model would fit.
func vllmStartCheck(model sizing.Model, req sizing.Request, res sizing.Result, byIndex map[int]gpu.Device) Check {
	c := Check{Name: "vLLM start-up", Required: fmt.Sprintf("free memory ≥ %.0f%% of total on each planned GPU", res.Utilization*100), Status: Pass}
	var found []string
	lowest := 1.0
	for _, i := range res.Devices {
		d := byIndex[i]
		found = append(found, fmt.Sprintf("GPU%d %s of %s free", i, sizing.Bytes(d.MemoryFree), sizing.Bytes(d.MemoryTotal)))
		if d.MemoryTotal > 0 {
			share := float64(d.MemoryFree) / float64(d.MemoryTotal)
			lowest = min(lowest, share)
			if share < res.Utilization {
				c.Status = Fail
			}
		}
	}
	c.Found = strings.Join(found, ", ")
	if c.Status == Fail {
		c.Fix = "vLLM refuses to start below that: stop the other processes on these GPUs"
		lower := math.Floor(lowest*100) / 100
		req.Utilization = lower
		devs := make([]sizing.Device, 0, len(res.Devices))
		for _, i := range res.Devices {
			devs = append(devs, sizing.Device{Index: i, Total: byIndex[i].MemoryTotal, Used: byIndex[i].MemoryUsed})
		}
		if lower > 0 {
			if alt, err := sizing.Plan(model, req, devs); err == nil && alt.Verdict == sizing.Fits {
				c.Fix += fmt.Sprintf(", or run vLLM with --gpu-memory-utilization %.2f (the model still fits)", lower)
			}
		}
	}
	return c
}

// excludeFailed turns the failures of GPUs the plan does not use into
// warnings: the model runs on the healthy ones, and the broken GPU is
// reported, not fatal.
func excludeFailed(r *Report, used []int) {
	inUse := map[string]bool{}
	for _, i := range used {
		inUse[fmt.Sprintf("GPU%d", i)] = true
	}
	r.Verdict = ""
	checks := r.Checks
	r.Checks = nil
	for _, c := range checks {
		id, _, _ := strings.Cut(c.Name, " ")
		if c.Status == Fail && strings.HasPrefix(id, "GPU") && id != "GPUs" && !inUse[id] {
			c.Status = Warn
			c.Fix = id + " is left out of the plan; " + c.Fix
		}
		r.add(c)
	}
}

func tpCheck(model sizing.Model, res sizing.Result, usable int) Check {
	var degrees []string
	for _, tp := range model.TPDegrees(max(usable, 1)) {
		degrees = append(degrees, strconv.Itoa(tp))
	}
	ids := make([]string, len(res.Devices))
	for i, d := range res.Devices {
		ids[i] = strconv.Itoa(d)
	}
	return Check{
		Name: "tensor parallel",
		Required: fmt.Sprintf("%s (divides %d heads and %d KV heads; %d usable GPU(s))",
			strings.Join(degrees, " or "), model.AttentionHeads, model.KVHeads, usable),
		Found:  fmt.Sprintf("%d on CUDA_VISIBLE_DEVICES=%s", res.TP, strings.Join(ids, ",")),
		Status: Pass,
	}
}

// finding is one thing wrong (or worth knowing) about a GPU.
type finding struct {
	name, required, found string
	status                Status
	fix                   string
}

// checkDevice adds the lines for one GPU and reports whether the model may
// be placed on it: a GPU with any failure is left out of sizing.
func checkDevice(r *Report, d gpu.Device, minCC string) bool {
	id := fmt.Sprintf("GPU%d", d.Index)
	var fs []finding
	if e, ok := d.Errors["memoryTotalBytes"]; ok {
		fs = append(fs, finding{"memory", "readable through NVML", "query failed: " + e, Fail,
			fmt.Sprintf("check %s with nvidia-smi -q -i %d; a GPU that cannot report its memory cannot be sized", id, d.Index)})
	}
	for _, fact := range sortedKeys(d.Errors) {
		if fact == "memoryTotalBytes" {
			continue
		}
		fs = append(fs, finding{fact, "readable through NVML", "query failed: " + d.Errors[fact], Warn,
			fmt.Sprintf("check %s with nvidia-smi -q -i %d", id, d.Index)})
	}
	if minCC != "" {
		if d.ComputeCapability == "" || compareVersions(d.ComputeCapability, minCC) < 0 {
			fs = append(fs, finding{"compute capability", minCC + " or later", orUnknown(d.ComputeCapability), Fail,
				"the bundle's kernels need compute capability " + minCC + "; use a newer GPU or a bundle built for this one"})
		}
	}
	if d.MIGEnabled != nil && *d.MIGEnabled {
		fs = append(fs, finding{"MIG", "off (the whole GPU for the model)", "on", Fail,
			fmt.Sprintf("disable MIG with nvidia-smi -i %d -mig 0 and reset the GPU, or leave %s to other workloads", d.Index, id)})
	}
	if d.ECCUncorrected != nil && *d.ECCUncorrected > 0 {
		fs = append(fs, finding{"ECC errors", "0 volatile uncorrected", fmt.Sprintf("%d volatile uncorrected", *d.ECCUncorrected), Fail,
			fmt.Sprintf("drain and reset the GPU (nvidia-smi -r -i %d), check the kernel log for Xid 48/63/64; replace the GPU if errors return", d.Index)})
	}
	if d.ECCEnabled != nil && !*d.ECCEnabled {
		fs = append(fs, finding{"ECC", "on", "off", Warn,
			fmt.Sprintf("memory errors go undetected: enable ECC with nvidia-smi -i %d -e 1 and reboot", d.Index)})
	}
	if d.RetiredPagesPending != nil && *d.RetiredPagesPending {
		fs = append(fs, finding{"retired pages", "none pending", "retirement pending", Fail,
			fmt.Sprintf("reset the GPU (nvidia-smi -r -i %d) or reboot so the pending pages are retired", d.Index)})
	}
	if d.RetiredPages != nil && *d.RetiredPages > maxRetiredPages {
		fs = append(fs, finding{"retired pages", fmt.Sprintf("at most %d", maxRetiredPages), strconv.Itoa(*d.RetiredPages), Warn,
			"the GPU's memory is wearing out; plan to replace it"})
	}
	if d.RowRemapFailure != nil && *d.RowRemapFailure {
		fs = append(fs, finding{"row remapping", "no failure", "a row remap failed", Fail,
			"the GPU ran out of spare memory rows; it needs replacement"})
	}
	if d.RowRemapPending != nil && *d.RowRemapPending {
		fs = append(fs, finding{"row remapping", "none pending", "remap pending", Fail,
			fmt.Sprintf("reset the GPU (nvidia-smi -r -i %d) or reboot to apply the pending remap", d.Index)})
	}
	if d.TemperatureC != nil && d.SlowdownTemperatureC != nil && *d.TemperatureC >= *d.SlowdownTemperatureC-thermalMargin {
		fs = append(fs, finding{"temperature", fmt.Sprintf("below %d °C (slowdown at %d °C)", *d.SlowdownTemperatureC-thermalMargin, *d.SlowdownTemperatureC),
			fmt.Sprintf("%d °C", *d.TemperatureC), Warn, "check the cooling before serving; a hot GPU slows down under load"})
	}
	if len(d.ThrottleReasons) > 0 {
		fs = append(fs, finding{"clock throttling", "none", strings.Join(d.ThrottleReasons, ", "), Warn,
			"check power and cooling (nvidia-smi -q -d PERFORMANCE)"})
	}
	if d.PersistenceMode != nil && !*d.PersistenceMode {
		fs = append(fs, finding{"persistence mode", "on", "off", Warn,
			"enable nvidia-persistenced (or nvidia-smi -pm 1) so the driver stays initialized between runs"})
	}
	if len(d.Processes) > 0 {
		var pids []string
		for _, p := range d.Processes {
			pids = append(pids, strconv.FormatUint(uint64(p.PID), 10))
		}
		fs = append(fs, finding{"other processes", "none", fmt.Sprintf("%d process(es) hold %s (pid %s)", len(d.Processes),
			sizing.Bytes(d.ProcessMemory()), strings.Join(pids, ", ")), Warn,
			"their memory is subtracted from what the model may use; stop them or give the model another GPU"})
	}

	healthy := true
	for _, f := range fs {
		r.add(Check{Name: id + " " + f.name, Required: f.required, Found: f.found, Status: f.status, Fix: f.fix})
		if f.status == Fail {
			healthy = false
		}
	}
	if len(fs) == 0 {
		r.add(Check{Name: id + " health", Required: healthRequired(minCC), Found: summary(d), Status: Pass})
	}
	return healthy
}

func healthRequired(minCC string) string {
	s := "healthy, MIG off"
	if minCC != "" {
		s = "cc " + minCC + "+, " + s
	}
	return s
}

func summary(d gpu.Device) string {
	parts := []string{d.Name, "cc " + orUnknown(d.ComputeCapability), sizing.Bytes(d.MemoryTotal)}
	if d.ECCEnabled == nil {
		parts = append(parts, "ECC n/a")
	} else {
		parts = append(parts, "ECC on")
	}
	if d.TemperatureC != nil {
		parts = append(parts, fmt.Sprintf("%d °C", *d.TemperatureC))
	}
	return strings.Join(parts, ", ")
}

// checkModules adds the NVIDIA kernel module and device node lines.
func checkModules(r *Report, f Facts) {
	nvmlOK := f.GPUErr == nil
	k := f.Host.Features
	c := Check{Name: "nvidia module", Required: "loaded", Found: describeFeature(k[host.NVIDIA])}
	switch {
	case k[host.NVIDIA].State == host.Loaded || k[host.NVIDIA].State == host.BuiltIn:
		c.Status = Pass
	case nvmlOK:
		c.Status, c.Found = Pass, "loaded (NVML answered)"
	default:
		c.Status, c.Fix = Fail, "install the NVIDIA driver and load it (modprobe nvidia)"
	}
	r.add(c)

	uvm := k[host.NVIDIAUVM]
	c = Check{Name: "nvidia_uvm module", Required: "loaded at boot (a hardened service cannot load it)", Found: describeFeature(uvm), Status: Pass}
	if uvm.State != host.Loaded && uvm.State != host.BuiltIn {
		c.Status = Warn
		c.Fix = "echo nvidia_uvm > /etc/modules-load.d/nvidia-uvm.conf && modprobe nvidia_uvm"
	}
	r.add(c)

	nv := k[host.Nouveau]
	c = Check{Name: "nouveau module", Required: "not loaded", Found: describeFeature(nv), Status: Pass}
	if nv.State == host.Loaded || nv.State == host.BuiltIn {
		c.Status = Fail
		c.Fix = "blacklist nouveau (echo 'blacklist nouveau' > /etc/modprobe.d/blacklist-nouveau.conf), rebuild the initramfs and reboot"
	}
	r.add(c)

	want := []string{"/dev/nvidiactl", "/dev/nvidia-uvm"}
	for _, d := range f.GPU.Devices {
		want = append(want, fmt.Sprintf("/dev/nvidia%d", d.Index))
	}
	var missing []string
	for _, w := range want {
		if !containsString(f.Host.NVIDIADevs, w) {
			missing = append(missing, w)
		}
	}
	c = Check{Name: "NVIDIA device nodes", Required: strings.Join(want, " "), Found: strings.Join(f.Host.NVIDIADevs, " "), Status: Pass}
	if c.Found == "" {
		c.Found = "none"
	}
	if len(missing) > 0 {
		c.Status = Warn
		c.Found += " (missing " + strings.Join(missing, " ") + ")"
		c.Fix = "load nvidia_uvm and run nvidia-modprobe -u -c=0 (or nvidia-smi once) to create them before the service starts"
		if !nvmlOK {
			c.Status = Fail
		}
	}
	r.add(c)
}

func describeFeature(f host.Feature) string {
	if f.State == "" {
		return "unknown"
	}
	return string(f.State) + " (" + f.Source + ")"
}

// compareVersions compares dotted numeric versions ("550.54.15", "8.6");
// a missing component counts as 0 and a non-numeric one compares as text.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		x, y := "0", "0"
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xi, errX := strconv.Atoi(x)
		yi, errY := strconv.Atoi(y)
		switch {
		case errX == nil && errY == nil && xi != yi:
			if xi < yi {
				return -1
			}
			return 1
		case (errX != nil || errY != nil) && x != y:
			return strings.Compare(x, y)
		}
	}
	return 0
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
