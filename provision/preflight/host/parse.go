package host

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Meminfo holds the /proc/meminfo lines preflight uses, in bytes.
type Meminfo struct {
	Total     int64
	Available int64
}

// ParseMeminfo reads MemTotal and MemAvailable from /proc/meminfo text.
// Kernels before 3.14 lack MemAvailable; MemFree + Buffers + Cached stands
// in for it there.
func ParseMeminfo(b []byte) (Meminfo, error) {
	vals := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || v < 0 || v > 1<<52 {
			return Meminfo{}, fmt.Errorf("line %d: %s: %q is not a size", n, key, f[0])
		}
		if len(f) > 1 && f[1] == "kB" {
			v *= 1024
		}
		vals[key] = v
	}
	if err := sc.Err(); err != nil {
		return Meminfo{}, err
	}
	m := Meminfo{Total: vals["MemTotal"], Available: vals["MemAvailable"]}
	if m.Total == 0 {
		return Meminfo{}, fmt.Errorf("no MemTotal line")
	}
	if _, ok := vals["MemAvailable"]; !ok {
		m.Available = vals["MemFree"] + vals["Buffers"] + vals["Cached"]
	}
	return m, nil
}

// CPUInfo is what preflight uses from /proc/cpuinfo.
type CPUInfo struct {
	Processors int
	Model      string
	Flags      []string // sorted, deduplicated
}

// ParseCPUInfo reads the processor count, the model name and the feature
// flags ("flags" on x86, "Features" on arm64) of the first processor.
func ParseCPUInfo(b []byte) CPUInfo {
	var c CPUInfo
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "processor":
			c.Processors++
		case "model name", "Model":
			if c.Model == "" {
				c.Model = val
			}
		case "flags", "Features":
			if len(seen) == 0 {
				for _, f := range strings.Fields(val) {
					if !seen[f] {
						seen[f] = true
						c.Flags = append(c.Flags, f)
					}
				}
			}
		}
	}
	sort.Strings(c.Flags)
	return c
}

// ParseKernelConfig reads CONFIG_X=value lines of a kernel build config;
// "# CONFIG_X is not set" lines and comments are skipped.
func ParseKernelConfig(b []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			out[k] = strings.Trim(v, `"`)
		}
	}
	return out
}

// ParseModules reads the module names of /proc/modules.
func ParseModules(b []byte) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			out[f[0]] = true
		}
	}
	return out
}

// moduleNamesFromPaths reads modules.builtin or modules.dep: one module path
// per line (before a colon in modules.dep), named like the module with '-'
// spelled '_' and a .ko suffix, possibly compressed.
func moduleNamesFromPaths(b []byte) map[string]bool {
	out := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		p, _, _ := strings.Cut(line, ":")
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		name := path.Base(p)
		for _, ext := range []string{".xz", ".zst", ".gz"} {
			name = strings.TrimSuffix(name, ext)
		}
		name = strings.TrimSuffix(name, ".ko")
		if name == "" || name == "." || strings.Contains(name, "/") {
			continue
		}
		out[strings.ReplaceAll(name, "-", "_")] = true
	}
	return out
}

// Mount is one line of /proc/mounts.
type Mount struct {
	Source, Dir, Type string
}

// ParseMounts reads /proc/mounts lines (source, directory, type, …).
func ParseMounts(b []byte) []Mount {
	var out []Mount
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		out = append(out, Mount{Source: f[0], Dir: unescapeMount(f[1]), Type: f[2]})
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space) of /proc/mounts.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				sb.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}
