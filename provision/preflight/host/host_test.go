package host

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// tree writes files (host path → content) under a new root. Content
// "<dir>" makes a directory; a path ending in .gz is gzipped.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if content == "<dir>" {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		data := []byte(content)
		if strings.HasSuffix(p, ".gz") {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(data)
			zw.Close()
			data = buf.Bytes()
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const meminfo = `MemTotal:       263870520 kB
MemFree:        250000000 kB
MemAvailable:   257000000 kB
Buffers:          100000 kB
`

const cpuinfo = `processor	: 0
model name	: AMD EPYC 9454 48-Core Processor
flags		: fpu sse2 avx avx2 avx512f sha_ni
processor	: 1
model name	: AMD EPYC 9454 48-Core Processor
flags		: fpu sse2 avx avx2 avx512f sha_ni
`

// gpuServer is a Debian host with the NVIDIA driver loaded and modules in
// /lib/modules.
func gpuServer() map[string]string {
	return map[string]string{
		"proc/sys/kernel/osrelease": "6.1.0-28-amd64\n",
		"proc/meminfo":              meminfo,
		"proc/cpuinfo":              cpuinfo,
		"proc/modules": "nvidia_uvm 1540096 0 - Live 0x0000000000000000 (POE)\n" +
			"nvidia 56487936 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n" +
			"nf_tables 286720 0 - Live 0x0000000000000000\n",
		"proc/misc":                  " 236 device-mapper\n 237 loop-control\n",
		"proc/mounts":                "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec 0 0\n",
		"boot/config-6.1.0-28-amd64": "CONFIG_MODULES=y\nCONFIG_CGROUP_BPF=y\nCONFIG_NF_TABLES=m\n# CONFIG_DRM_NOUVEAU is not set\n",
		"lib/modules/6.1.0-28-amd64/modules.builtin": "kernel/fs/ext4/ext4.ko\n",
		"lib/modules/6.1.0-28-amd64/modules.dep": "kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz\n" +
			"kernel/drivers/md/dm-mod.ko.xz:\n",
		"sys/fs/ext4/features/encryption": "supported\n",
		"dev/nvidia0":                     "",
		"dev/nvidiactl":                   "",
		"dev/nvidia-uvm":                  "",
		"var/lib":                         "<dir>",
	}
}

func TestProbeGPUServer(t *testing.T) {
	f, err := Probe(tree(t, gpuServer()), "/var/lib/qwen-appliance/store")
	if err != nil {
		t.Fatal(err)
	}
	if f.Kernel != "6.1.0-28-amd64" || f.MemTotal != 263870520*1024 || f.MemAvailable != 257000000*1024 {
		t.Errorf("kernel %q mem %d/%d", f.Kernel, f.MemTotal, f.MemAvailable)
	}
	if f.CPUs != 2 || f.CPUModel != "AMD EPYC 9454 48-Core Processor" || !f.Flag("avx2") || f.Flag("avx512vnni") {
		t.Errorf("cpus %d model %q flags %v", f.CPUs, f.CPUModel, f.CPUFlags)
	}
	if f.Store.CheckedAt != "/var/lib" || f.Store.FreeBytes <= 0 {
		t.Errorf("store %+v", f.Store)
	}
	want := map[string]Availability{
		NFTables: Loaded, FSCrypt: BuiltIn, DeviceMapper: Loaded, CgroupBPF: BuiltIn,
		NVIDIA: Loaded, NVIDIAUVM: Loaded, Nouveau: Absent,
	}
	for name, state := range want {
		if got := f.Features[name]; got.State != state || got.Source == "" {
			t.Errorf("%s: %+v, want %s", name, got, state)
		}
	}
	if !reflect.DeepEqual(f.NVIDIADevs, []string{"/dev/nvidia-uvm", "/dev/nvidia0", "/dev/nvidiactl"}) {
		t.Errorf("devices %v", f.NVIDIADevs)
	}
	if len(f.Errors) != 0 {
		t.Errorf("errors %v", f.Errors)
	}
}

// TestProbeModulesNotLoaded: nf_tables and dm_mod are installed modules that
// load on first use.
func TestProbeModulesNotLoaded(t *testing.T) {
	files := gpuServer()
	files["proc/modules"] = "nvidia 56487936 0 - Live 0x0 (POE)\nnouveau 2957312 0 - Live 0x0\n"
	files["proc/misc"] = " 237 loop-control\n"
	f, err := Probe(tree(t, files), "/var/lib")
	if err != nil {
		t.Fatal(err)
	}
	for name, state := range map[string]Availability{NFTables: Module, DeviceMapper: Module, NVIDIAUVM: Absent, Nouveau: Loaded} {
		if got := f.Features[name]; got.State != state {
			t.Errorf("%s: %+v, want %s", name, got, state)
		}
	}
	if got := f.Features[NFTables].Source; got != "/boot/config-6.1.0-28-amd64: CONFIG_NF_TABLES=m" {
		t.Errorf("nf_tables source %q", got)
	}
}

// TestProbeVMWithoutModules mirrors this project's build machine: a kernel
// without module support, its config in /proc/config.gz, a hybrid cgroup
// layout, and a /dev/mapper/control node with no device-mapper driver.
func TestProbeVMWithoutModules(t *testing.T) {
	f, err := Probe(tree(t, map[string]string{
		"proc/sys/kernel/osrelease": "6.18.44\n",
		"proc/meminfo":              "MemTotal: 24684084 kB\nMemAvailable: 23000000 kB\n",
		"proc/cpuinfo":              cpuinfo,
		"proc/misc":                 " 237 loop-control\n 229 fuse\n",
		"proc/mounts": "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n" +
			"cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n",
		"proc/config.gz":                  "CONFIG_NF_TABLES=y\nCONFIG_CGROUP_BPF=y\nCONFIG_FS_ENCRYPTION=y\n# CONFIG_BLK_DEV_DM is not set\n",
		"sys/module/fscrypto":             "<dir>",
		"sys/fs/ext4/features/encryption": "",
		"dev/mapper/control":              "",
	}), "/")
	if err != nil {
		t.Fatal(err)
	}
	for name, state := range map[string]Availability{
		NFTables: BuiltIn, FSCrypt: BuiltIn, DeviceMapper: Absent, CgroupBPF: BuiltIn,
		NVIDIA: Absent, NVIDIAUVM: Absent, Nouveau: Absent,
	} {
		if got := f.Features[name]; got.State != state {
			t.Errorf("%s: %+v, want %s", name, got, state)
		}
	}
	if got := f.Features[NFTables].Source; got != "/proc/config.gz: CONFIG_NF_TABLES=y" {
		t.Errorf("nf_tables source %q", got)
	}
	if got := f.Features[DeviceMapper].Source; !strings.Contains(got, "/dev/mapper/control exists but no driver") {
		t.Errorf("device-mapper source %q", got)
	}
	if got := f.Features[CgroupBPF].Source; !strings.Contains(got, "cgroup2 at /sys/fs/cgroup/unified") {
		t.Errorf("cgroup source %q", got)
	}
	if len(f.NVIDIADevs) != 0 {
		t.Errorf("devices %v", f.NVIDIADevs)
	}
}

// TestProbeBareTree: nothing readable gives unknowns and named errors, never
// a guess.
func TestProbeBareTree(t *testing.T) {
	f, err := Probe(tree(t, map[string]string{"proc/mounts": "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"}), "/srv/models")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{NFTables, NVIDIA, CgroupBPF} {
		if got := f.Features[name]; got.State != Unknown {
			t.Errorf("%s: %+v, want unknown", name, got)
		}
	}
	for _, fact := range []string{"memory", "cpu", "kernel"} {
		if !strings.Contains(f.Errors[fact], "/proc/") {
			t.Errorf("errors[%s] = %q", fact, f.Errors[fact])
		}
	}
	if f.Store.CheckedAt != "/" {
		t.Errorf("store %+v", f.Store)
	}
	if _, err := Probe(filepath.Join(t.TempDir(), "missing"), "/"); err == nil {
		t.Error("Probe of a missing root succeeded")
	}
}

func TestProbeStoreErrors(t *testing.T) {
	root := tree(t, map[string]string{"srv/file": "x"})
	f, _ := Probe(root, "/srv/file/store")
	if !strings.Contains(f.Errors["store"], "/srv/file is not a directory") {
		t.Errorf("errors %v", f.Errors)
	}
	f, _ = Probe(root, "relative/store")
	if !strings.Contains(f.Errors["store"], "not absolute") {
		t.Errorf("errors %v", f.Errors)
	}
}

// TestProbeThisHost reads the real /proc and /sys of the machine running
// the test.
func TestProbeThisHost(t *testing.T) {
	f, err := Probe("/", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if f.MemTotal <= 0 || f.MemAvailable <= 0 || f.CPUs <= 0 || f.Store.FreeBytes <= 0 || f.Kernel == "" {
		t.Fatalf("facts %+v", f)
	}
	for name, feat := range f.Features {
		t.Logf("%-14s %-8s %s", name, feat.State, feat.Source)
	}
}

func TestParseMeminfo(t *testing.T) {
	m, err := ParseMeminfo([]byte("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 1 kB\n"))
	if err != nil || m.Total != 1024000 || m.Available != 111*1024 {
		t.Fatalf("old kernel: %+v %v", m, err)
	}
	if _, err := ParseMeminfo([]byte("MemTotal: lots kB\n")); err == nil || !strings.Contains(err.Error(), "line 1: MemTotal") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ParseMeminfo([]byte("MemFree: 1 kB\n")); err == nil {
		t.Fatal("accepted meminfo without MemTotal")
	}
}

func TestParseMounts(t *testing.T) {
	got := ParseMounts([]byte("/dev/sda1 /mnt/my\\040disk ext4 rw 0 0\nshort\n"))
	if len(got) != 1 || got[0].Dir != "/mnt/my disk" || got[0].Type != "ext4" {
		t.Fatalf("got %+v", got)
	}
}

func TestParseCPUInfoARM(t *testing.T) {
	c := ParseCPUInfo([]byte("processor\t: 0\nFeatures\t: fp asimd sve\nprocessor\t: 1\nFeatures\t: fp asimd sve\n"))
	if c.Processors != 2 || !reflect.DeepEqual(c.Flags, []string{"asimd", "fp", "sve"}) {
		t.Fatalf("got %+v", c)
	}
}
