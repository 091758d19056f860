package host

import (
	"bytes"
	"compress/gzip"
	"io"
	"strings"
)

// Availability says whether a kernel feature can be used.
type Availability string

// Availabilities, from most to least usable.
const (
	BuiltIn Availability = "built-in" // compiled into the kernel
	Loaded  Availability = "loaded"   // a module that is loaded now
	Module  Availability = "module"   // a module that is installed but not loaded (loads on first use)
	Absent  Availability = "absent"   // every source that could tell says no
	Unknown Availability = "unknown"  // no source could tell
)

// Feature is one kernel feature and how Probe knows about it.
type Feature struct {
	State Availability `json:"state"`
	// Source names the file that decided, e.g. "/proc/config.gz: CONFIG_NF_TABLES=y",
	// so an operator can re-check by hand.
	Source string `json:"source"`
}

// Usable reports whether the feature is there or loads on demand.
func (f Feature) Usable() bool { return f.State == BuiltIn || f.State == Loaded || f.State == Module }

// kernel holds the kernel's self-descriptions that Probe consults, each read
// once: loaded modules, built-in modules, installed modules and the build
// configuration.
type kernel struct {
	h          *reader
	modules    map[string]bool // /proc/modules; nil when unreadable
	builtin    map[string]bool // modules.builtin; nil when unreadable
	installed  map[string]bool // modules.dep; nil when unreadable
	config     map[string]string
	configFrom string
	release    string
}

func (h *reader) kernel(release string) *kernel {
	k := &kernel{h: h, release: release}
	if b, err := h.read("proc/modules"); err == nil {
		k.modules = ParseModules(b)
	}
	if release != "" {
		dir := "lib/modules/" + release + "/"
		if b, err := h.read(dir + "modules.builtin"); err == nil {
			k.builtin = moduleNamesFromPaths(b)
		}
		if b, err := h.read(dir + "modules.dep"); err == nil {
			k.installed = moduleNamesFromPaths(b)
		}
	}
	if b, err := h.read("proc/config.gz"); err == nil {
		if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			if text, err := io.ReadAll(io.LimitReader(zr, 16<<20)); err == nil {
				k.config, k.configFrom = ParseKernelConfig(text), "/proc/config.gz"
			}
		}
	}
	if k.config == nil && release != "" {
		if b, err := h.read("boot/config-" + release); err == nil {
			k.config, k.configFrom = ParseKernelConfig(b), "/boot/config-"+release
		}
	}
	return k
}

// module decides about a feature provided by module name (underscores) or
// configured by symbol, consulting in order: /proc/modules, /sys/module,
// modules.builtin, the kernel config, modules.dep.
func (k *kernel) module(name, symbol string) Feature {
	if k.modules[name] {
		return Feature{Loaded, "/proc/modules: " + name}
	}
	if k.h.exists("sys/module/" + name) {
		// Loadable modules have an initstate file; built-in ones do not.
		if k.h.exists("sys/module/" + name + "/initstate") {
			return Feature{Loaded, "/sys/module/" + name + "/initstate"}
		}
		return Feature{BuiltIn, "/sys/module/" + name + " (no initstate: built in)"}
	}
	if k.builtin[name] {
		return Feature{BuiltIn, "/lib/modules/" + k.release + "/modules.builtin: " + name}
	}
	if symbol != "" && k.config != nil {
		switch v := k.config[symbol]; v {
		case "y":
			return Feature{BuiltIn, k.configFrom + ": " + symbol + "=y"}
		case "m":
			return Feature{Module, k.configFrom + ": " + symbol + "=m"}
		}
	}
	if k.installed[name] {
		return Feature{Module, "/lib/modules/" + k.release + "/modules.dep: " + name}
	}
	if k.config != nil && k.config["CONFIG_MODULES"] != "y" {
		return Feature{Absent, k.configFrom + ": CONFIG_MODULES not set (no loadable modules) and " + name + " is not built in"}
	}
	var checked []string
	if k.modules != nil {
		checked = append(checked, "/proc/modules")
	}
	checked = append(checked, "/sys/module")
	if k.builtin != nil {
		checked = append(checked, "modules.builtin")
	}
	if symbol != "" && k.config != nil {
		checked = append(checked, k.configFrom+" ("+symbol+" not set)")
	}
	if k.installed != nil {
		checked = append(checked, "modules.dep")
	}
	// Without a module list, a build config or modules.dep, a missing
	// /sys/module entry proves nothing: built-in code without parameters
	// has none.
	if k.modules == nil && k.builtin == nil && k.installed == nil && (symbol == "" || k.config == nil) {
		return Feature{Unknown, "no module list, modules.builtin or kernel config readable; checked /sys/module/" + name}
	}
	return Feature{Absent, "not in " + strings.Join(checked, ", ")}
}

// fscrypt is usable when ext4 advertises encryption (the store's likely
// filesystem) or the kernel config enables it.
func (k *kernel) fscrypt() Feature {
	if k.h.exists("sys/fs/ext4/features/encryption") {
		return Feature{BuiltIn, "/sys/fs/ext4/features/encryption"}
	}
	if k.config != nil {
		if k.config["CONFIG_FS_ENCRYPTION"] == "y" {
			return Feature{BuiltIn, k.configFrom + ": CONFIG_FS_ENCRYPTION=y"}
		}
		return Feature{Absent, k.configFrom + ": CONFIG_FS_ENCRYPTION not set; no /sys/fs/ext4/features/encryption"}
	}
	if k.h.exists("sys/fs/ext4") {
		return Feature{Absent, "/sys/fs/ext4/features/encryption missing"}
	}
	return Feature{Unknown, "no /sys/fs/ext4 and no kernel config"}
}

// deviceMapper is loaded when the driver has registered its control device
// in /proc/misc. A /dev/mapper/control node alone proves nothing: device
// managers create it even on kernels without the driver.
func (k *kernel) deviceMapper() Feature {
	if b, err := k.h.read("proc/misc"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[1] == "device-mapper" {
				return Feature{Loaded, "/proc/misc: device-mapper"}
			}
		}
	}
	f := k.module("dm_mod", "CONFIG_BLK_DEV_DM")
	if f.State == Absent && k.h.exists("dev/mapper/control") {
		f.Source += "; /dev/mapper/control exists but no driver is registered in /proc/misc"
	}
	return f
}

// cgroupBPF needs the unified (v2) cgroup hierarchy mounted and the kernel
// built with CONFIG_CGROUP_BPF; systemd attaches its IP filters there.
func (k *kernel) cgroupBPF() Feature {
	b, err := k.h.read("proc/mounts")
	if err != nil {
		return Feature{Unknown, err.Error()}
	}
	at := ""
	for _, m := range ParseMounts(b) {
		if m.Type == "cgroup2" {
			at = m.Dir
			break
		}
	}
	if at == "" {
		return Feature{Absent, "/proc/mounts: no cgroup2 hierarchy mounted"}
	}
	where := "/proc/mounts: cgroup2 at " + at
	if k.config == nil {
		return Feature{Unknown, where + "; no kernel config to confirm CONFIG_CGROUP_BPF"}
	}
	if k.config["CONFIG_CGROUP_BPF"] != "y" {
		return Feature{Absent, where + "; " + k.configFrom + ": CONFIG_CGROUP_BPF not set"}
	}
	return Feature{BuiltIn, where + "; " + k.configFrom + ": CONFIG_CGROUP_BPF=y"}
}
