//go:build linux

package preflight

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu/gputest"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/host"
)

// qwen7B is a manifest for Qwen2.5-7B-Instruct in bf16 on vLLM, with the
// facts from REFERENCE.md.
func qwen7B() *manifests.Manifest {
	return &manifests.Manifest{
		SchemaVersion: manifests.SchemaVersion,
		Name:          "qwen2.5-7b-instruct",
		Version:       3,
		Model: manifests.Model{
			Name: "Qwen/Qwen2.5-7B-Instruct", Architecture: "qwen2", Format: "safetensors",
			Layers: 28, AttentionHeads: 28, KVHeads: 4, HeadDim: 128, HiddenSize: 3584,
			Dtype: "bf16", MaxContext: 32768, WeightsBytes: 15_231_233_024,
		},
		Requirements: manifests.Requirements{
			Accelerator: "nvidia", MinComputeCapability: "8.0", MinDriverVersion: "535.104.05",
		},
		Runtime: manifests.Runtime{Kind: "vllm", Devices: []string{"cuda"}},
		Files:   []manifests.File{{Path: "model/model-00001-of-00004.safetensors", Size: 4 << 20}},
	}
}

// cpuBundle is a small GGUF model served by llama.cpp on the CPU.
func cpuBundle() *manifests.Manifest {
	m := qwen7B()
	m.Name = "qwen2.5-0.5b-instruct-gguf"
	m.Model = manifests.Model{
		Name: "Qwen/Qwen2.5-0.5B-Instruct-GGUF", Format: "gguf", Layers: 24, AttentionHeads: 14, KVHeads: 2,
		HeadDim: 64, Dtype: "q4_k_m", MaxContext: 32768, WeightsBytes: 491_400_032,
	}
	m.Requirements = manifests.Requirements{}
	m.Runtime = manifests.Runtime{Kind: "llama.cpp", Devices: []string{"cpu"}}
	return m
}

// hostTree writes a Debian GPU server's /proc, /sys, /boot and /dev with the
// NVIDIA driver loaded and nodes for n GPUs. edit may change files first.
func hostTree(t *testing.T, n int, edit func(map[string]string)) string {
	t.Helper()
	files := map[string]string{
		"proc/sys/kernel/osrelease":       "6.1.0-28-amd64\n",
		"proc/meminfo":                    "MemTotal: 263870520 kB\nMemAvailable: 257000000 kB\n",
		"proc/cpuinfo":                    "processor\t: 0\nmodel name\t: AMD EPYC 9454\nflags\t\t: fpu sse2 avx avx2\n",
		"proc/modules":                    "nvidia_uvm 1 0 - Live 0x0 (POE)\nnvidia 1 1 nvidia_uvm, Live 0x0 (POE)\nnf_tables 1 0 - Live 0x0\n",
		"proc/misc":                       " 236 device-mapper\n",
		"proc/mounts":                     "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
		"boot/config-6.1.0-28-amd64":      "CONFIG_MODULES=y\nCONFIG_CGROUP_BPF=y\nCONFIG_NF_TABLES=m\nCONFIG_FS_ENCRYPTION=y\n",
		"sys/fs/ext4/features/encryption": "",
		"dev/nvidiactl":                   "",
		"dev/nvidia-uvm":                  "",
		"var/lib/.keep":                   "",
	}
	for i := range n {
		files[fmt.Sprintf("dev/nvidia%d", i)] = ""
	}
	if edit != nil {
		edit(files)
	}
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func run(t *testing.T, m *manifests.Manifest, lib nvml.Interface, root string, opts Options) *Report {
	t.Helper()
	opts.NVML, opts.HostRoot = lib, root
	r, err := Run(context.Background(), m, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func check(t *testing.T, r *Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	t.Fatalf("no check %q in %q", name, names)
	return Check{}
}

func deviceCount(s *server.Server) int { return len(s.Devices) }

// TestGPUHosts pins the verdict, context and tensor-parallel degree for
// Qwen2.5-7B bf16 on each GPU host.
func TestGPUHosts(t *testing.T) {
	for _, tc := range []struct {
		name        string
		host        func() *server.Server
		concurrency int
		verdict     Status
		context     int
		tp          int
		devices     string
		fix         string // part of the memory line's fix
	}{
		{"RTX 3060 12 GB", func() *server.Server { return gputest.Host(gputest.RTX3060) }, 0, Fail, 0, 1, "0",
			"needs 17.4 GiB per GPU for a 32768-token context, GPU0 has 10.8 GiB; even a 2048-token context needs 15.8 GiB per GPU: use a quantized (AWQ/GPTQ) bundle of the model, or use GPUs with at least 17.5 GiB each"},
		{"RTX 4090 24 GB", func() *server.Server { return gputest.Host(gputest.RTX4090) }, 0, Pass, 32768, 1, "0", ""},
		{"RTX 4090 24 GB, 4 sequences", func() *server.Server { return gputest.Host(gputest.RTX4090) }, 4, Warn, 26624, 1, "0",
			"needs 22.7 GiB per GPU for 4 sequences of 32768 tokens, GPU0 has 21.6 GiB: use --max-context 26624, or --concurrency 3, or a quantized (AWQ/GPTQ) bundle"},
		{"A10 24 GB", func() *server.Server { return gputest.Host(gputest.A10) }, 0, Pass, 32768, 1, "0", ""},
		{"A100 40 GB", func() *server.Server { return gputest.Host(gputest.A100PCIe40GB) }, 0, Pass, 32768, 1, "0", ""},
		{"DGX H100", gputest.DGXH100, 0, Pass, 32768, 1, "0", ""},
		{"DGX H200", gputest.DGXH200, 0, Pass, 32768, 1, "0", ""},
		{"DGX A100", gputest.DGXA100, 0, Pass, 32768, 1, "0", ""},
		{"2× RTX 3060", func() *server.Server { return gputest.Host(gputest.RTX3060, gputest.RTX3060) }, 0, Pass, 32768, 2, "0,1", ""},
		{"DGX H100, 64 sequences", gputest.DGXH100, 64, Pass, 32768, 2, "0,1", ""},
		// Mixed GPUs: a tensor-parallel group is as big as its smallest member.
		{"RTX 4090 + A10, 16 sequences", func() *server.Server { return gputest.Host(gputest.RTX4090, gputest.A10) }, 16, Warn, 26624, 2, "0,1",
			"needs 22.6 GiB per GPU for 16 sequences of 32768 tokens, GPU1 has 20.2 GiB: use --max-context 26624, or --concurrency 13, or a quantized (AWQ/GPTQ) bundle"},
		// No bf16 on the T4 (compute capability 7.5), and the 3060 alone is too small: told what would fit.
		{"T4 + RTX 3060", func() *server.Server { return gputest.Host(gputest.T4, gputest.RTX3060) }, 0, Fail, 0, 1, "1",
			"needs 17.4 GiB per GPU for a 32768-token context, GPU1 has 10.8 GiB; even a 2048-token context needs 15.8 GiB per GPU: use a quantized (AWQ/GPTQ) bundle of the model, or use GPUs with at least 17.5 GiB each"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.host()
			r := run(t, qwen7B(), s, hostTree(t, deviceCount(s), nil), Options{Concurrency: tc.concurrency, Store: "/var/lib/qwen-appliance"})
			if r.Verdict != tc.verdict || r.Mode != GPU {
				t.Fatalf("verdict %s mode %s, want %s on GPU\n%s", r.Verdict, r.Mode, tc.verdict, table(r))
			}
			if r.Plan.Context != tc.context || r.Plan.TP != tc.tp || joinInts(r.Plan.Devices) != tc.devices {
				t.Fatalf("context %d TP %d devices %v, want %d, %d, %s", r.Plan.Context, r.Plan.TP, r.Plan.Devices, tc.context, tc.tp, tc.devices)
			}
			mem := check(t, r, "model memory")
			if mem.Fix != tc.fix {
				t.Fatalf("fix:\n got %q\nwant %q", mem.Fix, tc.fix)
			}
			// The plan's group reaches the runtime by UUID, and the unit by
			// device node.
			uuids, minors := r.PlanGPUs()
			if len(uuids) != tc.tp || len(minors) != tc.tp {
				t.Fatalf("PlanGPUs = %v, %v for TP %d", uuids, minors, tc.tp)
			}
			for i, idx := range r.Plan.Devices {
				d, _ := s.Devices[idx].GetUUID()
				n, _ := s.Devices[idx].GetMinorNumber()
				if uuids[i] != d || minors[i] != n {
					t.Fatalf("GPU%d: PlanGPUs gave %s /dev/nvidia%d, NVML says %s /dev/nvidia%d", idx, uuids[i], minors[i], d, n)
				}
			}
		})
	}
}

func table(r *Report) string {
	var b strings.Builder
	r.WriteTable(&b, 0)
	return b.String()
}

func TestComputeCapability(t *testing.T) {
	r := run(t, qwen7B(), gputest.Host(gputest.T4), hostTree(t, 1, nil), Options{})
	c := check(t, r, "GPU0 compute capability")
	if c.Status != Fail || c.Found != "7.5" || r.Verdict != Fail {
		t.Fatalf("%+v verdict %s", c, r.Verdict)
	}
	if m := check(t, r, "model memory"); m.Status != Fail || m.Found != "none of the GPUs above is usable" {
		t.Fatalf("%+v", m)
	}
}

func TestDriverTooOld(t *testing.T) {
	m := qwen7B()
	m.Requirements.MinDriverVersion = "560.28.03"
	r := run(t, m, gputest.Host(gputest.A10), hostTree(t, 1, nil), Options{})
	c := check(t, r, "NVIDIA driver")
	if c.Status != Fail || c.Found != "550.54.15, CUDA 12.4" || !strings.Contains(c.Fix, "560.28.03") {
		t.Fatalf("%+v", c)
	}
}

// Failure injection: each fault must show up as its own line with the
// status and way out an operator needs.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		host    func() *server.Server
		tree    func(map[string]string)
		check   string
		status  Status
		found   string
		verdict Status
	}{
		{
			name:  "library missing",
			check: "NVIDIA driver", status: Fail, found: "no NVIDIA driver found (looked for libnvidia-ml.so.1)", verdict: Fail,
		},
		{
			name: "ECC errors",
			host: func() *server.Server {
				s := gputest.Host(gputest.A100PCIe40GB)
				s.Devices[0].(*server.Device).GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
					return 2, nvml.SUCCESS
				}
				return s
			},
			check: "GPU0 ECC errors", status: Fail, found: "2 volatile uncorrected", verdict: Fail,
		},
		{
			name: "pending retired pages",
			host: func() *server.Server {
				s := gputest.Host(gpus.Config{Name: "Tesla V100-SXM2-32GB", Architecture: nvml.DEVICE_ARCH_VOLTA, Brand: nvml.BRAND_TESLA, MemoryMB: 32768, CudaMajor: 7, CudaMinor: 0})
				s.Devices[0].(*server.Device).GetRetiredPagesPendingStatusFunc = func() (nvml.EnableState, nvml.Return) {
					return nvml.FEATURE_ENABLED, nvml.SUCCESS
				}
				return s
			},
			check: "GPU0 retired pages", status: Fail, found: "retirement pending", verdict: Fail,
		},
		{
			name: "row remap pending",
			host: func() *server.Server {
				s := gputest.Host(gputest.A100PCIe40GB)
				s.Devices[0].(*server.Device).GetRemappedRowsFunc = func() (int, int, bool, bool, nvml.Return) { return 0, 1, true, false, nvml.SUCCESS }
				return s
			},
			check: "GPU0 row remapping", status: Fail, found: "remap pending", verdict: Fail,
		},
		{
			name: "MIG enabled",
			host: func() *server.Server {
				s := gputest.Host(gputest.A100PCIe40GB)
				s.Devices[0].(*server.Device).MigMode = nvml.DEVICE_MIG_ENABLE
				return s
			},
			check: "GPU0 MIG", status: Fail, found: "on", verdict: Fail,
		},
		{
			name: "GPU busy with another process",
			host: func() *server.Server {
				s := gputest.Host(gputest.RTX4090)
				gputest.Busy(s.Devices[0].(*server.Device), 31337, 8<<30)
				return s
			},
			check: "GPU0 other processes", status: Warn, found: "1 process(es) hold 8.0 GiB (pid 31337)", verdict: Fail,
		},
		{
			// 3 GiB held by another process: the model fits in what is
			// left, but vLLM refuses to start with less than 90% free.
			name: "vLLM start-up rule",
			host: func() *server.Server {
				s := gputest.Host(gputest.RTX4090)
				gputest.Busy(s.Devices[0].(*server.Device), 4711, 3<<30)
				return s
			},
			check: "vLLM start-up", status: Fail, found: "GPU0 21.0 GiB of 24.0 GiB free", verdict: Fail,
		},
		{
			name: "NVML memory query fails",
			host: func() *server.Server {
				s := gputest.Host(gputest.A10)
				gputest.Replace(s, 0, gputest.Failing{Device: s.Devices[0], Method: "GetMemoryInfo", Ret: nvml.ERROR_UNKNOWN})
				return s
			},
			check: "GPU0 memory", status: Fail, found: "query failed: ERROR_UNKNOWN", verdict: Fail,
		},
		{
			name: "NVML temperature query fails",
			host: func() *server.Server {
				s := gputest.Host(gputest.A10)
				gputest.Replace(s, 0, gputest.Failing{Device: s.Devices[0], Method: "GetTemperature", Ret: nvml.ERROR_UNKNOWN})
				return s
			},
			check: "GPU0 temperatureC", status: Warn, found: "query failed: ERROR_UNKNOWN", verdict: Warn,
		},
		{
			name: "hot and throttled",
			host: func() *server.Server {
				s := gputest.Host(gputest.A10)
				d := s.Devices[0].(*server.Device)
				d.GetTemperatureFunc = func(nvml.TemperatureSensors) (uint32, nvml.Return) { return 86, nvml.SUCCESS }
				return s
			},
			check: "GPU0 temperature", status: Warn, found: "86 °C", verdict: Warn,
		},
		{
			name: "persistence off",
			host: func() *server.Server {
				s := gputest.Host(gputest.A10)
				s.Devices[0].(*server.Device).GetPersistenceModeFunc = func() (nvml.EnableState, nvml.Return) { return nvml.FEATURE_DISABLED, nvml.SUCCESS }
				return s
			},
			check: "GPU0 persistence mode", status: Warn, found: "off", verdict: Warn,
		},
		{
			name:  "nouveau loaded",
			host:  func() *server.Server { return gputest.Host(gputest.A10) },
			tree:  func(f map[string]string) { f["proc/modules"] += "nouveau 1 0 - Live 0x0\n" },
			check: "nouveau module", status: Fail, verdict: Fail,
		},
		{
			name: "nvidia_uvm not loaded",
			host: func() *server.Server { return gputest.Host(gputest.A10) },
			tree: func(f map[string]string) {
				f["proc/modules"] = "nvidia 1 0 - Live 0x0\nnf_tables 1 0 - Live 0x0\n"
				delete(f, "dev/nvidia-uvm")
			},
			check: "nvidia_uvm module", status: Warn, verdict: Warn,
		},
		{
			name: "no nf_tables",
			host: func() *server.Server { return gputest.Host(gputest.A10) },
			tree: func(f map[string]string) {
				f["proc/modules"] = "nvidia_uvm 1 0 - Live 0x0\nnvidia 1 0 - Live 0x0\n"
				f["boot/config-6.1.0-28-amd64"] = "CONFIG_MODULES=y\n"
			},
			check: "nf_tables", status: Fail, verdict: Fail,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lib nvml.Interface = gputest.Missing()
			n := 1
			if tc.host != nil {
				s := tc.host()
				lib, n = s, deviceCount(s)
			}
			r := run(t, qwen7B(), lib, hostTree(t, n, tc.tree), Options{})
			c := check(t, r, tc.check)
			if c.Status != tc.status || (tc.found != "" && c.Found != tc.found) || c.Fix == "" {
				t.Fatalf("%+v, want %s %q with a fix", c, tc.status, tc.found)
			}
			if r.Verdict != tc.verdict {
				t.Fatalf("verdict %s, want %s\n%s", r.Verdict, tc.verdict, table(r))
			}
		})
	}
}

// TestNoNVMLBuild: a build that cannot read NVML at all (preflight run on a
// laptop) fails the driver line with that reason and says where to run it,
// rather than telling the operator to install a driver.
func TestNoNVMLBuild(t *testing.T) {
	hf, err := host.Probe(hostTree(t, 1, nil), DefaultStore)
	if err != nil {
		t.Fatal(err)
	}
	gpuErr := fmt.Errorf("cannot probe GPUs from a darwin build: %w", gpu.ErrUnsupported)
	r, err := Evaluate(qwen7B(), Facts{Host: hf, GPUErr: gpuErr}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := check(t, r, "NVIDIA driver")
	if c.Status != Fail || c.Found != "cannot probe GPUs from a darwin build: NVML needs Linux" || c.Fix != "run preflight on the Linux GPU host itself" {
		t.Fatalf("%+v", c)
	}
	if r.Verdict != Fail {
		t.Fatalf("verdict %s\n%s", r.Verdict, table(r))
	}
}

// TestBrokenGPUExcluded: one bad GPU of eight is reported, and the model is
// planned on a healthy one.
func TestBrokenGPUExcluded(t *testing.T) {
	s := gputest.DGXH100()
	s.Devices[0].(*server.Device).GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
		return 7, nvml.SUCCESS
	}
	s.Devices[1].(*server.Device).MigMode = nvml.DEVICE_MIG_ENABLE
	r := run(t, qwen7B(), s, hostTree(t, 8, nil), Options{})
	if r.Verdict != Warn || joinInts(r.Plan.Devices) != "2" {
		t.Fatalf("verdict %s devices %v\n%s", r.Verdict, r.Plan.Devices, table(r))
	}
	if c := check(t, r, "GPU0 ECC errors"); c.Status != Warn || !strings.HasPrefix(c.Fix, "GPU0 is left out of the plan") {
		t.Fatalf("%+v", c)
	}
}

func TestCPUBundle(t *testing.T) {
	// No driver, as on this build machine: the CPU bundle is sized in RAM.
	r := run(t, cpuBundle(), gputest.Missing(), hostTree(t, 0, nil), Options{})
	if r.Mode != CPU || r.Verdict != Pass || r.GPU != nil {
		t.Fatalf("mode %s verdict %s\n%s", r.Mode, r.Verdict, table(r))
	}
	if c := check(t, r, "model memory"); !strings.HasPrefix(c.Found, "RAM has 220.6 GiB usable") {
		t.Fatalf("%+v", c)
	}
	for _, c := range r.Checks {
		if strings.Contains(c.Name, "nvidia") || strings.Contains(c.Name, "NVIDIA") {
			t.Errorf("CPU bundle got GPU check %+v", c)
		}
	}

	// Too little RAM: 600 MiB available for a 0.5B model at 32K context.
	r = run(t, cpuBundle(), gputest.Missing(), hostTree(t, 0, func(f map[string]string) {
		f["proc/meminfo"] = "MemTotal: 1000000 kB\nMemAvailable: 600000 kB\n"
	}), Options{})
	if c := check(t, r, "model memory"); c.Status != Fail || !strings.Contains(c.Fix, "at least") || r.Verdict != Fail {
		t.Fatalf("%+v\n%s", c, table(r))
	}

	// A bundle that runs on CUDA or CPU, on a host without a driver.
	m := cpuBundle()
	m.Runtime.Devices = []string{"cuda", "cpu"}
	r = run(t, m, gputest.Missing(), hostTree(t, 0, nil), Options{})
	if c := check(t, r, "NVIDIA GPU"); r.Mode != CPU || c.Status != Warn || !strings.Contains(c.Found, "libnvidia-ml.so.1") {
		t.Fatalf("mode %s %+v", r.Mode, c)
	}
	// And with a GPU it uses the GPU.
	r = run(t, m, gputest.Host(gputest.A10), hostTree(t, 1, nil), Options{})
	if r.Mode != GPU || r.Verdict != Pass {
		t.Fatalf("mode %s verdict %s\n%s", r.Mode, r.Verdict, table(r))
	}
}

func TestCPUFeatures(t *testing.T) {
	m := cpuBundle()
	m.Requirements.CPUFeatures = []string{"avx2", "avx512f"}
	r := run(t, m, gputest.Missing(), hostTree(t, 0, nil), Options{})
	if c := check(t, r, "CPU features"); c.Status != Fail || c.Found != "missing avx512f" {
		t.Fatalf("%+v", c)
	}
}

func TestDisk(t *testing.T) {
	m := qwen7B()
	m.Files[0].Size = 1 << 60 // more than any test machine has
	r := run(t, m, gputest.Host(gputest.A10), hostTree(t, 1, nil), Options{Store: "/var/lib/qwen-appliance"})
	c := check(t, r, "disk at /var/lib/qwen-appliance")
	if c.Status != Fail || !strings.Contains(c.Found, "free at /var/lib") || !strings.Contains(c.Fix, "--store") {
		t.Fatalf("%+v", c)
	}
}

func TestEncryptionFeatures(t *testing.T) {
	// Neither fscrypt nor device-mapper: the encrypted store cannot be made.
	r := run(t, qwen7B(), gputest.Host(gputest.A10), hostTree(t, 1, func(f map[string]string) {
		delete(f, "sys/fs/ext4/features/encryption")
		delete(f, "proc/misc")
		f["boot/config-6.1.0-28-amd64"] = "CONFIG_MODULES=y\nCONFIG_CGROUP_BPF=y\n"
	}), Options{})
	if c := check(t, r, "fscrypt"); c.Status != Fail {
		t.Fatalf("%+v", c)
	}
	// Only fscrypt (like this build machine): device-mapper is a warning.
	r = run(t, qwen7B(), gputest.Host(gputest.A10), hostTree(t, 1, func(f map[string]string) { delete(f, "proc/misc") }), Options{})
	if c := check(t, r, "device-mapper"); c.Status != Pass {
		// dm_mod is not in modules.dep of the fake tree and not in the config.
		if c.Status != Warn {
			t.Fatalf("%+v", c)
		}
	}
	if c := check(t, r, "fscrypt"); c.Status != Pass {
		t.Fatalf("%+v", c)
	}
}

func TestOptionErrors(t *testing.T) {
	_, err := Run(context.Background(), qwen7B(), Options{NVML: gputest.Host(gputest.A10), HostRoot: hostTree(t, 1, nil), Context: 65536})
	if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), "supports 1 to 32768 tokens") {
		t.Fatalf("err = %v", err)
	}
	m := qwen7B()
	m.Model.Layers = 0
	_, err = Run(context.Background(), m, Options{NVML: gputest.Host(gputest.A10), HostRoot: hostTree(t, 1, nil)})
	if !errors.Is(err, ErrModelFacts) || !strings.Contains(err.Error(), "model.layers") {
		t.Fatalf("err = %v", err)
	}
	m = qwen7B()
	m.Model.KVCacheDtype = "fp4x"
	_, err = Run(context.Background(), m, Options{NVML: gputest.Host(gputest.A10), HostRoot: hostTree(t, 1, nil)})
	if !errors.Is(err, ErrModelFacts) || !strings.Contains(err.Error(), "kvCacheDtype") {
		t.Fatalf("err = %v", err)
	}
}

func TestWeightsFromFiles(t *testing.T) {
	m := qwen7B()
	m.Model.WeightsBytes = 0
	m.Runtime.ModelPath = "model"
	m.Files = []manifests.File{
		{Path: "model/a.safetensors", Size: 10 << 30}, {Path: "model/config.json", Size: 1 << 10},
		{Path: "runtime/vllm.whl", Size: 1 << 30},
	}
	got, err := modelFacts(m)
	if err != nil || got.WeightsBytes != 10<<30+1<<10 {
		t.Fatalf("%d %v", got.WeightsBytes, err)
	}
	m.Runtime.ModelPath = ""
	if got, _ := modelFacts(m); got.WeightsBytes != 10<<30 {
		t.Fatalf("by extension: %d", got.WeightsBytes)
	}
	m.Files = nil
	if _, err := modelFacts(m); err == nil || !strings.Contains(err.Error(), "weightsBytes") {
		t.Fatalf("err = %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"550.54.15", "535.104.05", 1}, {"535.104.05", "535.104.05", 0}, {"535.86", "535.104.05", -1},
		{"8.6", "8.0", 1}, {"7.5", "8.0", -1}, {"9.0", "9", 0},
	} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestJSON pins the machine-readable shape: unknown GPU facts are null, not
// false or zero, and the plan carries the numbers behind the verdict.
func TestJSON(t *testing.T) {
	r := run(t, qwen7B(), gputest.Host(gputest.RTX4090), hostTree(t, 1, nil), Options{})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Verdict string `json:"verdict"`
		Mode    string `json:"mode"`
		Plan    struct {
			TP         int   `json:"tensorParallel"`
			Context    int   `json:"context"`
			KVPerToken int64 `json:"kvBytesPerToken"`
		} `json:"plan"`
		GPU struct {
			Driver  string           `json:"driverVersion"`
			Devices []map[string]any `json:"devices"`
		} `json:"gpu"`
		Host struct {
			Features map[string]struct{ State, Source string } `json:"features"`
		} `json:"host"`
		Checks []Check `json:"checks"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Verdict != "pass" || got.Mode != "gpu" || got.Plan.TP != 1 || got.Plan.Context != 32768 || got.Plan.KVPerToken != 57344 {
		t.Fatalf("%s", b)
	}
	d := got.GPU.Devices[0]
	if v, ok := d["eccEnabled"]; !ok || v != nil {
		t.Errorf("eccEnabled = %v (present %v), want null for a GeForce card", v, ok)
	}
	if d["persistenceMode"] != true || d["computeCapability"] != "8.9" || got.GPU.Driver != "550.54.15" {
		t.Errorf("device %v", d)
	}
	if got.Host.Features["nf_tables"].State != "loaded" || len(got.Checks) == 0 {
		t.Errorf("features %v", got.Host.Features)
	}
}

func TestVLLMStartFix(t *testing.T) {
	s := gputest.Host(gputest.RTX4090)
	gputest.Busy(s.Devices[0].(*server.Device), 4711, 3<<30)
	r := run(t, qwen7B(), s, hostTree(t, 1, nil), Options{})
	if c := check(t, r, "model memory"); c.Status != Pass {
		t.Fatalf("%+v", c)
	}
	c := check(t, r, "vLLM start-up")
	if want := "vLLM refuses to start below that: stop the other processes on these GPUs, or run vLLM with --gpu-memory-utilization 0.87 (the model still fits)"; c.Fix != want {
		t.Fatalf("fix %q, want %q", c.Fix, want)
	}
	// Other runtimes have no such rule.
	m := qwen7B()
	m.Runtime.Kind = "llama.cpp"
	r = run(t, m, gputest.Host(gputest.RTX4090), hostTree(t, 1, nil), Options{})
	for _, c := range r.Checks {
		if c.Name == "vLLM start-up" {
			t.Fatalf("llama.cpp bundle got %+v", c)
		}
	}
}
