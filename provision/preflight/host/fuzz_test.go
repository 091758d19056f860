package host

import (
	"strings"
	"testing"
)

// FuzzParse feeds the same bytes to every parser of host files: none may
// panic, and what they return must be consistent with the input.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		meminfo, cpuinfo,
		"MemTotal: 1 kB\nMemAvailable: x\n",
		"CONFIG_NF_TABLES=y\n# CONFIG_X is not set\nCONFIG_S=\"str\"\n",
		"nvidia 1 0 - Live 0x0 (POE)\n",
		"cgroup2 /sys/fs/cgroup\\040x cgroup2 rw 0 0\n/dev/a /b\\04 ext4\n",
		"kernel/drivers/md/dm-mod.ko.zst: kernel/x.ko\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := ParseMeminfo(b); err == nil && (m.Total <= 0 || m.Available < 0) {
			t.Fatalf("meminfo %+v without error", m)
		}
		c := ParseCPUInfo(b)
		for i := 1; i < len(c.Flags); i++ {
			if c.Flags[i-1] >= c.Flags[i] {
				t.Fatalf("flags not sorted and unique: %q", c.Flags)
			}
		}
		for k := range ParseKernelConfig(b) {
			if !strings.HasPrefix(k, "CONFIG_") {
				t.Fatalf("config key %q", k)
			}
		}
		for name := range ParseModules(b) {
			if name == "" || strings.ContainsAny(name, " \t\n") {
				t.Fatalf("module %q", name)
			}
		}
		for name := range moduleNamesFromPaths(b) {
			if strings.Contains(name, "-") || strings.Contains(name, "/") {
				t.Fatalf("module %q", name)
			}
		}
		for _, m := range ParseMounts(b) {
			if m.Type == "" {
				t.Fatalf("mount %+v", m)
			}
		}
	})
}
