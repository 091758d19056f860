//go:build linux

package preflight

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	texttable "github.com/qwen-appliance/qwen-appliance/internal/table"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/gpu/gputest"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/host"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// TestTables compares the operator's table with testdata/*.golden (rewrite
// them with go test -run TestTables -update). Free disk space is pinned so
// the tables do not depend on the machine running the test.
func TestTables(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *manifests.Manifest
		lib  func() nvml.Interface
		opts Options
	}{
		{"rtx3060-fail", qwen7B(), func() nvml.Interface { return gputest.Host(gputest.RTX3060) }, Options{}},
		{"rtx4090-pass", qwen7B(), func() nvml.Interface { return gputest.Host(gputest.RTX4090) }, Options{}},
		{"rtx4090-reduced", qwen7B(), func() nvml.Interface { return gputest.Host(gputest.RTX4090) }, Options{Concurrency: 4}},
		{"dgxh100-broken-gpu0", qwen7B(), func() nvml.Interface {
			s := gputest.DGXH100()
			s.Devices[0].(*server.Device).GetTotalEccErrorsFunc = func(nvml.MemoryErrorType, nvml.EccCounterType) (uint64, nvml.Return) {
				return 3, nvml.SUCCESS
			}
			return s
		}, Options{}},
		{"no-driver", qwen7B(), gputest.Missing, Options{}},
		{"cpu-bundle", cpuBundle(), gputest.Missing, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lib := tc.lib()
			n := 0
			if s, ok := lib.(*server.Server); ok {
				n = len(s.Devices)
			}
			hf, err := host.Probe(hostTree(t, n, nil), "/var/lib/qwen-appliance")
			if err != nil {
				t.Fatal(err)
			}
			hf.Store.FreeBytes = 500 << 30
			f := Facts{Host: hf}
			f.GPU, f.GPUErr = gpu.Probe(lib)
			r, err := Evaluate(tc.m, f, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			// The default table fits 100 columns and still names every check.
			var narrow strings.Builder
			if err := r.WriteTable(&narrow, texttable.Width); err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(narrow.String(), "\n") {
				if texttable.StringWidth(l) > texttable.Width {
					t.Errorf("%d columns: %s", texttable.StringWidth(l), l)
				}
			}
			for _, c := range r.Checks {
				if !strings.Contains(narrow.String(), c.Name[:min(len(c.Name), 15)]) {
					t.Errorf("narrow table lacks check %q:\n%s", c.Name, narrow.String())
				}
			}
			var b strings.Builder
			if err := r.WriteTable(&b, 0); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if b.String() != string(want) {
				t.Errorf("table differs from %s (run with -update to accept):\n%s", path, b.String())
			}
		})
	}
}
