// Package host reads the facts about the machine that preflight checks:
// memory, CPU, free disk where the model store will live, and the kernel
// features the later install steps need. Everything is read from files
// under a root directory (normally "/"), so tests point it at a fake /proc
// and /sys. It only reads; it never loads a module or changes a setting.
package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrUnsupported is returned for facts that cannot be read on this
// operating system (free disk space outside Linux).
var ErrUnsupported = errors.New("not supported on this operating system")

// Facts is what Probe found. Zero numbers mean "could not be read"; the
// reason is in Errors.
type Facts struct {
	Kernel       string             `json:"kernel"`
	MemTotal     int64              `json:"memTotalBytes"`
	MemAvailable int64              `json:"memAvailableBytes"`
	CPUs         int                `json:"cpus"`
	CPUModel     string             `json:"cpuModel"`
	CPUFlags     []string           `json:"-"` // long; Flag answers questions about it
	Store        Store              `json:"store"`
	Features     map[string]Feature `json:"features"`
	NVIDIADevs   []string           `json:"nvidiaDevices"` // /dev/nvidia* nodes present
	// Errors maps a fact to why it could not be read.
	Errors map[string]string `json:"errors,omitempty"`
}

// Store is the free space where the model store will be created.
type Store struct {
	Path      string `json:"path"`
	CheckedAt string `json:"checkedAt"` // the nearest existing directory, which statfs measured
	FreeBytes int64  `json:"freeBytes"`
}

// Flag reports whether the CPU has the named feature flag (as in
// /proc/cpuinfo, e.g. "avx2").
func (f Facts) Flag(name string) bool {
	i := sort.SearchStrings(f.CPUFlags, name)
	return i < len(f.CPUFlags) && f.CPUFlags[i] == name
}

// Names of the features Probe looks for.
const (
	NFTables     = "nf_tables"     // nftables egress and ingress rules
	FSCrypt      = "fscrypt"       // filesystem encryption of the model store
	DeviceMapper = "device-mapper" // LUKS volumes (cryptsetup open)
	CgroupBPF    = "cgroup-bpf"    // systemd IPAddressDeny= per unit
	NVIDIA       = "nvidia"        // the NVIDIA kernel driver
	NVIDIAUVM    = "nvidia_uvm"    // CUDA unified memory, needed by every CUDA program
	Nouveau      = "nouveau"       // the open driver that blocks nvidia
)

// Files Probe reads, relative to the root.
const (
	nvidiaDevDir = "dev"
	procMeminfo  = "proc/meminfo"
	procCPUInfo  = "proc/cpuinfo"
	procRelease  = "proc/sys/kernel/osrelease"
)

// Probe reads the host under root (normally "/"); store is the absolute path
// where the model store will live, measured through root. Facts that cannot
// be read are left zero and explained in Facts.Errors; Probe itself fails
// only when root is not a directory.
func Probe(root, store string) (Facts, error) {
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return Facts{}, fmt.Errorf("read host facts: %s is not a directory", root)
	}
	h := &reader{root: root}
	f := Facts{Features: map[string]Feature{}}
	fail := func(fact string, err error) {
		if f.Errors == nil {
			f.Errors = map[string]string{}
		}
		f.Errors[fact] = err.Error()
	}

	if b, err := h.read(procRelease); err == nil {
		f.Kernel = strings.TrimSpace(string(b))
	} else {
		fail("kernel", err)
	}
	if b, err := h.read(procMeminfo); err != nil {
		fail("memory", err)
	} else if m, err := ParseMeminfo(b); err != nil {
		fail("memory", fmt.Errorf("%s: %w", "/"+procMeminfo, err))
	} else {
		f.MemTotal, f.MemAvailable = m.Total, m.Available
	}
	if b, err := h.read(procCPUInfo); err != nil {
		fail("cpu", err)
	} else {
		c := ParseCPUInfo(b)
		f.CPUs, f.CPUModel, f.CPUFlags = c.Processors, c.Model, c.Flags
	}
	if store != "" {
		s, err := h.store(store)
		f.Store = s
		if err != nil {
			fail("store", err)
		}
	}
	k := h.kernel(f.Kernel)
	f.Features[NFTables] = k.module("nf_tables", "CONFIG_NF_TABLES")
	f.Features[FSCrypt] = k.fscrypt()
	f.Features[DeviceMapper] = k.deviceMapper()
	f.Features[CgroupBPF] = k.cgroupBPF()
	f.Features[NVIDIA] = k.module("nvidia", "")
	if h.exists("proc/driver/nvidia/version") {
		f.Features[NVIDIA] = Feature{Loaded, "/proc/driver/nvidia/version"}
	}
	f.Features[NVIDIAUVM] = k.module("nvidia_uvm", "")
	f.Features[Nouveau] = k.module("nouveau", "CONFIG_DRM_NOUVEAU")
	f.NVIDIADevs = h.nvidiaDevices()
	return f, nil
}

type reader struct{ root string }

// path maps an absolute host path (or one relative to /) into root.
func (h *reader) path(p string) string {
	return filepath.Join(h.root, strings.TrimPrefix(p, "/"))
}

func (h *reader) read(p string) ([]byte, error) {
	b, err := os.ReadFile(h.path(p))
	if err != nil {
		return nil, fmt.Errorf("read /%s: %w", strings.TrimPrefix(p, "/"), unwrapPath(err))
	}
	return b, nil
}

func (h *reader) exists(p string) bool {
	_, err := os.Lstat(h.path(p))
	return err == nil
}

// unwrapPath drops the *PathError's path, which names the root-prefixed
// file; callers name the host path instead.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// store measures the free space at the nearest existing ancestor of path,
// since the store directory is usually created by install.
func (h *reader) store(path string) (Store, error) {
	s := Store{Path: path}
	if !filepath.IsAbs(path) {
		return s, fmt.Errorf("store path %q is not absolute", path)
	}
	dir := filepath.Clean(path)
	for {
		st, err := os.Stat(h.path(dir))
		if err == nil && st.IsDir() {
			break
		}
		if err == nil {
			return s, fmt.Errorf("store path %s: %s is not a directory", path, dir)
		}
		if dir == "/" {
			return s, fmt.Errorf("store path %s: no existing parent directory", path)
		}
		dir = filepath.Dir(dir)
	}
	s.CheckedAt = dir
	free, err := freeBytes(h.path(dir))
	if err != nil {
		return s, fmt.Errorf("free space at %s: %w", dir, err)
	}
	s.FreeBytes = free
	return s, nil
}

func (h *reader) nvidiaDevices() []string {
	matches, _ := filepath.Glob(h.path(filepath.Join(nvidiaDevDir, "nvidia*")))
	out := []string{}
	for _, m := range matches {
		out = append(out, "/dev/"+filepath.Base(m))
	}
	sort.Strings(out)
	return out
}
