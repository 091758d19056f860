package harden

import (
	"fmt"
	"net/netip"
	"strings"
)

// ServiceUser is the system user and group the gateway runs as: no login
// shell, no home. It alone may read the token file, the audit and TLS keys
// and write the audit log, and (by the firewall's runtime-port rule) connect
// to the inference server.
const ServiceUser = "qwen-appliance"

// RuntimeUser is the system user and group the inference server runs as: no
// login shell, no home, no secrets. It reads its release in the model store
// and writes only its own state directory there.
const RuntimeUser = "qwen-runtime"

// Unit names install starts.
const (
	RuntimeUnit = "qwen-appliance-runtime.service"
	GatewayUnit = "qwen-appliance-gateway.service"
	// StoreUnit unlocks the encrypted model store at boot, with the key
	// file install keeps; the runtime's units require it.
	StoreUnit = "qwen-appliance-store.service"
)

// NVIDIADevices are the device groups a GPU runtime needs; without
// nvidia-frontend the GPU is invisible, and nvidia_uvm must already be
// loaded because the unit cannot load modules.
var NVIDIADevices = []string{"char-nvidiactl", nvidiaFrontend, "char-nvidia-uvm", "char-nvidia-caps"}

// nvidiaFrontend is the device group of /dev/nvidiactl and every
// /dev/nvidiaN.
const nvidiaFrontend = "char-nvidia-frontend"

// Service describes one long-running unit; Unit adds the hardening.
type Service struct {
	Description string
	// User is the account (and group of the same name) the unit runs as;
	// ServiceUser when empty.
	User        string
	ExecStart   string   // absolute path and arguments
	Environment []string // KEY=VALUE, no spaces in values
	// GPU opens the NVIDIA devices (and only those) and relaxes what CUDA
	// needs: /proc/driver, writable-executable memory for JIT runtimes.
	GPU bool
	// GPUMinors, with GPU, narrow the GPU device nodes to /dev/nvidiaN for
	// these N (the preflight plan's group); every NVIDIA GPU when empty.
	GPUMinors []int
	// SystemInfo keeps /proc/meminfo, /proc/cpuinfo and the like visible
	// (no ProcSubset=pid): inference servers size themselves from them, and
	// Ollama refuses to load a model when it reads 0 bytes of memory.
	SystemInfo bool
	// AllowCIDRs are peers the unit may exchange packets with besides
	// localhost (the gateway's client CIDRs); everything else is denied by
	// the cgroup's IP filter in both directions.
	AllowCIDRs     []netip.Prefix
	ReadOnlyPaths  []string
	ReadWritePaths []string
	After          []string // ordering, besides the firewall
	Requires       []string // units this one cannot run without, besides the firewall (ordered after them too)
	// StopStatus is the exit status the program ends with when systemd
	// stops it (qwen-appliance exits 130 after SIGTERM), counted as a clean
	// stop rather than a failure; 0 for none.
	StopStatus int
	// Log, when set, is a file that systemd appends the service's output
	// to (opened by systemd, so the service needs no write access to it).
	Log string
}

// RuntimeEnv turns off the inference servers' phone-home paths (vLLM usage
// statistics, Hugging Face downloads) on top of the firewall.
var RuntimeEnv = []string{"VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"}

// Unit renders s as a systemd service with the hardening that applies to
// it; it requires the firewall unit, so it never runs on an open host.
// It returns an error naming the field at fault.
func Unit(s Service) (string, error) {
	if !strings.HasPrefix(s.ExecStart, "/") {
		return "", fmt.Errorf("unit: ExecStart %q must start with an absolute path", s.ExecStart)
	}
	user := s.User
	if user == "" {
		user = ServiceUser
	}
	if user != ServiceUser && user != RuntimeUser {
		return "", fmt.Errorf("unit: User %q is neither %s nor %s", s.User, ServiceUser, RuntimeUser)
	}
	for _, v := range [][]string{s.Environment, s.ReadOnlyPaths, s.ReadWritePaths, s.After, s.Requires, {s.Description, s.ExecStart, s.Log}} {
		for _, x := range v {
			if strings.ContainsAny(x, "\n\r") {
				return "", fmt.Errorf("unit: %q contains a line break", x)
			}
			if strings.Contains(x, "%") {
				return "", fmt.Errorf("unit: %q contains %%, which systemd would expand as a specifier", x)
			}
		}
	}
	for _, e := range s.Environment {
		if !strings.Contains(e, "=") || strings.ContainsAny(e, " \t\"'\\") {
			return "", fmt.Errorf("unit: environment entry %q must be KEY=VALUE without spaces or quotes", e)
		}
	}
	paths := append(append([]string(nil), s.ReadOnlyPaths...), s.ReadWritePaths...)
	if s.Log != "" {
		paths = append(paths, s.Log)
	}
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, " \t") {
			return "", fmt.Errorf("unit: path %q must be absolute, without spaces", p)
		}
	}
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("[Unit]")
	w("Description=%s", s.Description)
	requires := append([]string{FirewallUnit}, s.Requires...)
	w("Requires=%s", strings.Join(requires, " "))
	w("After=%s", strings.Join(append(requires, s.After...), " "))
	w("")
	w("[Service]")
	w("Type=exec")
	w("ExecStart=%s", s.ExecStart)
	w("User=%s", user)
	w("Group=%s", user)
	for _, e := range s.Environment {
		w("Environment=%s", e)
	}
	w("Restart=on-failure")
	if s.StopStatus != 0 {
		w("SuccessExitStatus=%d", s.StopStatus)
	}
	w("UMask=0077")
	if s.Log != "" {
		w("StandardOutput=append:%s", s.Log)
		w("StandardError=inherit")
	}
	w("")
	w("# Privileges: none, and no way to gain any.")
	w("NoNewPrivileges=yes")
	w("CapabilityBoundingSet=")
	w("AmbientCapabilities=")
	w("PrivateUsers=%s", yes(!s.GPU))
	w("RestrictSUIDSGID=yes")
	w("LockPersonality=yes")
	w("RestrictRealtime=yes")
	w("RestrictNamespaces=yes")
	w("RemoveIPC=yes")
	w("KeyringMode=private")
	w("MemoryDenyWriteExecute=%s", yes(!s.GPU))
	w("")
	w("# Filesystem: read-only system, no homes, private /tmp.")
	w("ProtectSystem=strict")
	w("ProtectHome=yes")
	w("PrivateTmp=yes")
	w("PrivateMounts=yes")
	w("ProtectProc=invisible")
	if !s.GPU && !s.SystemInfo {
		w("ProcSubset=pid")
	}
	if len(s.ReadOnlyPaths) > 0 {
		w("ReadOnlyPaths=%s", strings.Join(s.ReadOnlyPaths, " "))
	}
	if len(s.ReadWritePaths) > 0 {
		w("ReadWritePaths=%s", strings.Join(s.ReadWritePaths, " "))
	}
	w("")
	w("# Kernel and host: hands off.")
	w("ProtectKernelTunables=yes")
	w("ProtectKernelModules=yes")
	w("ProtectKernelLogs=yes")
	w("ProtectControlGroups=yes")
	w("ProtectClock=yes")
	w("ProtectHostname=yes")
	w("")
	if s.GPU {
		w("# Devices: the NVIDIA devices only.")
		w("DevicePolicy=closed")
		for _, d := range NVIDIADevices {
			if d == nvidiaFrontend && len(s.GPUMinors) > 0 {
				// The same major as every GPU: name the control node and
				// the planned GPUs only.
				w("DeviceAllow=/dev/nvidiactl rw")
				for _, n := range s.GPUMinors {
					w("DeviceAllow=/dev/nvidia%d rw", n)
				}
				continue
			}
			w("DeviceAllow=%s rw", d)
		}
	} else {
		w("# Devices: none.")
		w("PrivateDevices=yes")
		w("DevicePolicy=closed")
	}
	w("")
	w("# Network: IP only, to localhost%s; the firewall table is the second wall.", map[bool]string{true: " and the client CIDRs", false: ""}[len(s.AllowCIDRs) > 0])
	w("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6")
	w("IPAddressDeny=any")
	allow := []string{"localhost"}
	for _, c := range s.AllowCIDRs {
		allow = append(allow, c.String())
	}
	w("IPAddressAllow=%s", strings.Join(allow, " "))
	w("")
	w("# System calls: the ordinary service set, native ABI only.")
	w("SystemCallArchitectures=native")
	w("SystemCallFilter=@system-service")
	w("SystemCallFilter=~@privileged @resources")
	if s.GPU {
		// CUDA and PyTorch pin threads and raise limits.
		w("SystemCallFilter=sched_setaffinity setrlimit")
	}
	w("SystemCallErrorNumber=EPERM")
	w("")
	w("[Install]")
	w("WantedBy=multi-user.target")
	return b.String(), nil
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
