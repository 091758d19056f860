//go:build linux

package gpu_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
)

// These tests read real GPUs through the real NVML and hold the result
// against nvidia-smi, the driver's own tool. They skip where nvidia-smi is
// missing (the build machine, CI); scripts/device/real-gpu.sh runs them on a
// GPU host.

// smiFields are the nvidia-smi --query-gpu fields compared, in order.
var smiFields = []string{"index", "uuid", "name", "pci.bus_id", "compute_cap", "driver_version",
	"memory.total", "memory.free", "ecc.mode.current", "persistence_mode", "mig.mode.current"}

func nvidiaSMI(t *testing.T) [][]string {
	t.Helper()
	smi, err := exec.LookPath("nvidia-smi")
	if err != nil {
		t.Skip("nvidia-smi not found: no NVIDIA driver here (scripts/device/real-gpu.sh runs this on a GPU host)")
	}
	out, err := exec.Command(smi, "--query-gpu="+strings.Join(smiFields, ","), "--format=csv,noheader,nounits").Output()
	if err != nil {
		t.Fatalf("nvidia-smi: %v", err)
	}
	var rows [][]string
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		row := strings.Split(strings.TrimSpace(line), ", ")
		if len(row) != len(smiFields) {
			t.Fatalf("nvidia-smi row %q has %d fields, want %d", line, len(row), len(smiFields))
		}
		rows = append(rows, row)
	}
	return rows
}

// smiBool reads nvidia-smi's Enabled/Disabled; nil for [N/A].
func smiBool(s string) *bool {
	switch s {
	case "Enabled":
		return new(true)
	case "Disabled":
		return new(false)
	}
	return nil
}

func sameBool(a, b *bool) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func show(b *bool) string {
	if b == nil {
		return "unknown"
	}
	return strconv.FormatBool(*b)
}

func TestRealGPUAgreesWithNvidiaSMI(t *testing.T) {
	rows := nvidiaSMI(t)
	inv, err := gpu.Probe(nil)
	if err != nil {
		t.Fatalf("Probe: %v", err)
	}
	if len(inv.Devices) != len(rows) {
		t.Fatalf("NVML sees %d GPUs, nvidia-smi %d", len(inv.Devices), len(rows))
	}
	for i, row := range rows {
		d := inv.Devices[i]
		f := map[string]string{}
		for j, name := range smiFields {
			f[name] = row[j]
		}
		t.Logf("GPU%d: %s %s bus %s cc %s, %d MiB total, %d MiB free, ECC %s, persistence %s, MIG %s, %d processes, throttle %v",
			d.Index, d.Name, d.UUID, d.PCIBusID, d.ComputeCapability, d.MemoryTotal>>20, d.MemoryFree>>20,
			show(d.ECCEnabled), show(d.PersistenceMode), show(d.MIGEnabled), len(d.Processes), d.ThrottleReasons)
		if len(d.Errors) > 0 {
			t.Errorf("GPU%d: queries failed: %v", i, d.Errors)
		}
		for _, c := range []struct{ fact, nvml, smi string }{
			{"index", strconv.Itoa(d.Index), f["index"]},
			{"uuid", d.UUID, f["uuid"]},
			{"name", d.Name, f["name"]},
			{"pci.bus_id", strings.ToUpper(d.PCIBusID), strings.ToUpper(f["pci.bus_id"])},
			{"compute_cap", d.ComputeCapability, f["compute_cap"]},
			{"driver_version", inv.DriverVersion, f["driver_version"]},
			{"memory.total MiB", strconv.FormatInt(d.MemoryTotal>>20, 10), f["memory.total"]},
		} {
			if c.nvml != c.smi {
				t.Errorf("GPU%d %s: NVML says %q, nvidia-smi %q", i, c.fact, c.nvml, c.smi)
			}
		}
		// Free memory moves with other processes; an idle GPU's should
		// agree to within a few MiB.
		if free, err := strconv.ParseInt(f["memory.free"], 10, 64); err != nil || abs(free-d.MemoryFree>>20) > 64 {
			t.Errorf("GPU%d free memory: NVML %d MiB, nvidia-smi %q", i, d.MemoryFree>>20, f["memory.free"])
		}
		for _, c := range []struct {
			fact string
			nvml *bool
		}{{"ecc.mode.current", d.ECCEnabled}, {"persistence_mode", d.PersistenceMode}, {"mig.mode.current", d.MIGEnabled}} {
			if want := smiBool(f[c.fact]); !sameBool(c.nvml, want) {
				t.Errorf("GPU%d %s: NVML says %s, nvidia-smi %q", i, c.fact, show(c.nvml), f[c.fact])
			}
		}
	}
}

// A process holding GPU memory must show up in what preflight reads: its
// "other processes" finding is what stops an install onto a busy GPU.
func TestRealGPUSeesAnotherProcess(t *testing.T) {
	rows := nvidiaSMI(t)
	if len(rows) == 0 {
		t.Skip("no GPUs")
	}
	const hold = 2 << 30
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-c", `import sys, torch
x = torch.empty(`+strconv.Itoa(hold)+`, dtype=torch.uint8, device="cuda:0")
torch.cuda.synchronize()
print("ready", flush=True)
sys.stdin.read()`)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Skipf("python3 with torch: %v", err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	if line, _ := bufio.NewReader(stdout).ReadString('\n'); line != "ready\n" {
		t.Skipf("python3 could not allocate on cuda:0 (torch missing?): %q", line)
	}

	inv, err := gpu.Probe(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := inv.Devices[0]
	t.Logf("GPU0 processes: %+v, used %d MiB", d.Processes, d.MemoryUsed>>20)
	var found *gpu.Process
	for i, p := range d.Processes {
		if int(p.PID) == cmd.Process.Pid {
			found = &d.Processes[i]
		}
	}
	if found == nil {
		t.Fatalf("pid %d holds %d MiB on GPU0 but NVML lists %+v", cmd.Process.Pid, hold>>20, d.Processes)
	}
	if found.MemoryUsed != 0 && found.MemoryUsed < hold {
		t.Errorf("pid %d holds at least %d MiB, NVML says %d MiB", found.PID, hold>>20, found.MemoryUsed>>20)
	}
	if d.MemoryUsed < hold {
		t.Errorf("GPU0 used %d MiB while a process holds %d MiB", d.MemoryUsed>>20, hold>>20)
	}
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}
