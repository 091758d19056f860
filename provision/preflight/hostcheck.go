package preflight

import (
	"fmt"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/host"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/sizing"
)

// cpuUtilization is the share of available RAM a CPU runtime may plan on;
// the rest stays for the page cache and the gateway.
const cpuUtilization = 0.9

// diskMargin is the free space asked for beyond the bundle's size: 10%,
// and at least minDiskMargin, for logs, state and a second copy of small
// files during an update.
const (
	diskMargin    = 0.10
	minDiskMargin = 1 << 30
)

// checkCPU sizes the model in RAM and checks the CPU features a CPU runtime
// needs.
func checkCPU(r *Report, m *manifests.Manifest, f Facts, model sizing.Model, req sizing.Request) error {
	h := f.Host
	if h.MemAvailable <= 0 {
		r.add(Check{Name: "model memory", Required: "readable /proc/meminfo", Found: orUnknown(h.Errors["memory"]), Status: Fail,
			Fix: "preflight could not read the host's memory"})
	} else {
		if m.Runtime.OverheadBytes == 0 {
			req.Overhead = sizing.DefaultCPUOverhead
		}
		req.Utilization = cpuUtilization
		// Available memory already excludes what other processes hold.
		res, err := sizing.Plan(model, req, []sizing.Device{{Index: 0, Total: h.MemAvailable}})
		if err != nil {
			return fmt.Errorf("%w: %w", ErrModelFacts, err)
		}
		r.Plan = &res
		c := memoryCheck(m, res, req, CPU, "RAM", h.MemAvailable, 0)
		c.Found = fmt.Sprintf("RAM has %s usable (%.0f%% of %s available)", sizing.Bytes(res.Budget), cpuUtilization*100, sizing.Bytes(h.MemAvailable))
		if res.Verdict == sizing.Fits {
			c.Found += fmt.Sprintf("; %d such sequences fit at once", res.MaxConcurrency)
		}
		r.add(c)
	}
	c := Check{Name: "CPU", Required: "AVX2 (CPU runtimes are built for it)", Found: fmt.Sprintf("%d CPU(s), %s", h.CPUs, orUnknown(h.CPUModel)), Status: Pass}
	if !containsString(m.Requirements.CPUFeatures, "avx2") && !h.Flag("avx2") {
		c.Status, c.Found = Warn, c.Found+", no avx2"
		c.Fix = "inference will be very slow without AVX2; use a newer CPU or a GPU bundle"
	}
	r.add(c)
	return nil
}

// checkHost adds memory, disk, CPU feature and kernel feature lines that
// every bundle needs.
func checkHost(r *Report, m *manifests.Manifest, f Facts, store string) {
	h := f.Host
	req := m.Requirements

	c := Check{Name: "RAM", Required: "any", Found: fmt.Sprintf("%s total, %s available", sizing.Bytes(h.MemTotal), sizing.Bytes(h.MemAvailable)), Status: Pass}
	if req.MinRAMBytes > 0 {
		c.Required = sizing.Bytes(req.MinRAMBytes) + " total"
		if h.MemTotal < req.MinRAMBytes {
			c.Status, c.Fix = Fail, fmt.Sprintf("the bundle needs %s of RAM; add %s", sizing.Bytes(req.MinRAMBytes), sizing.Bytes(req.MinRAMBytes-h.MemTotal))
		}
	}
	if h.MemTotal == 0 {
		c.Status, c.Found, c.Fix = Warn, "unknown: "+h.Errors["memory"], "check /proc/meminfo"
	}
	r.add(c)

	size := m.TotalSize()
	need := max(req.MinDiskBytes, size+max(int64(float64(size)*diskMargin), minDiskMargin))
	c = Check{Name: "disk at " + store, Required: fmt.Sprintf("%s free (bundle %s + margin)", sizing.Bytes(need), sizing.Bytes(size)), Status: Pass}
	switch {
	case h.Errors["store"] != "":
		c.Status, c.Found, c.Fix = Fail, h.Errors["store"], "pass --store with an absolute path on a local filesystem"
	default:
		c.Found = fmt.Sprintf("%s free at %s", sizing.Bytes(h.Store.FreeBytes), h.Store.CheckedAt)
		if h.Store.FreeBytes < need {
			c.Status = Fail
			c.Fix = fmt.Sprintf("free %s at %s, or pass --store on a filesystem with more space", sizing.Bytes(need-h.Store.FreeBytes), h.Store.CheckedAt)
		}
	}
	r.add(c)

	if len(req.CPUFeatures) > 0 {
		var missing []string
		for _, feat := range req.CPUFeatures {
			if !h.Flag(feat) {
				missing = append(missing, feat)
			}
		}
		c = Check{Name: "CPU features", Required: strings.Join(req.CPUFeatures, " "), Found: "all present", Status: Pass}
		if len(missing) > 0 {
			c.Status, c.Found = Fail, "missing "+strings.Join(missing, " ")
			c.Fix = "the bundle's runtime was built for these instructions; use a host whose CPU has them"
		}
		r.add(c)
	}

	checkKernel(r, h)
}

// checkKernel adds the kernel features later install steps rely on.
func checkKernel(r *Report, h host.Facts) {
	k := h.Features
	nft := k[host.NFTables]
	c := Check{Name: "nf_tables", Required: "available (egress firewall)", Found: describeFeature(nft), Status: Pass}
	switch {
	case nft.State == host.Unknown:
		c.Status, c.Fix = Warn, "could not tell; check with: nft list tables"
	case !nft.Usable():
		c.Status, c.Fix = Fail, "the egress firewall needs a kernel with CONFIG_NF_TABLES"
	}
	r.add(c)

	fscrypt, dm := k[host.FSCrypt], k[host.DeviceMapper]
	either := fscrypt.Usable() || dm.Usable()
	for _, e := range []struct {
		name, required string
		f              host.Feature
		fix            string
	}{
		{"fscrypt", "available (encrypted model store), or device-mapper", fscrypt, "the store can use LUKS instead; for fscrypt, use a kernel with CONFIG_FS_ENCRYPTION and ext4"},
		{"device-mapper", "available (LUKS model store), or fscrypt", dm, "the store can use fscrypt instead; LUKS needs device-mapper (CONFIG_BLK_DEV_DM, or modprobe dm_mod where it is a module)"},
	} {
		c := Check{Name: e.name, Required: e.required, Found: describeFeature(e.f), Status: Pass}
		if !e.f.Usable() {
			c.Status, c.Fix = Warn, e.fix
			if !either && e.f.State != host.Unknown {
				c.Status = Fail
				c.Fix = "the model store must be encrypted and neither fscrypt nor device-mapper is available; " + c.Fix
			}
		}
		r.add(c)
	}

	bpf := k[host.CgroupBPF]
	c = Check{Name: "cgroup BPF", Required: "cgroup2 with BPF (per-service IP filtering)", Found: describeFeature(bpf), Status: Pass}
	if bpf.State != host.BuiltIn {
		c.Status = Warn
		c.Fix = "without it systemd's IPAddressDeny= does nothing; the nftables rules still apply"
	}
	r.add(c)
}
