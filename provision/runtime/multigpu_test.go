package runtime

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/provision/preflight/sizing"
)

// A plan for an 8-GPU H100 server (80 GiB each, GPU 0 partly taken by
// another process) and a model too large for one GPU: sizing picks two
// GPUs, not GPU 0, and vLLM gets both the degree and exactly those GPUs,
// numbered as NVML (and the plan) number them.
func TestVLLMGetsThePlansGPUs(t *testing.T) {
	const gib = int64(1) << 30
	model := sizing.Model{Layers: 80, AttentionHeads: 64, KVHeads: 8, HeadDim: 128, KVElementBytes: 2,
		WeightsBytes: 110 * gib, MaxContext: 32768}
	var devs []sizing.Device
	for i := range 8 {
		devs = append(devs, sizing.Device{Index: i, Total: 80 * gib})
	}
	devs[0].Used = 20 * gib
	plan, err := sizing.Plan(model, sizing.Request{Context: 32768}, devs)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Verdict != sizing.Fits || plan.TP != 2 || slices.Contains(plan.Devices, 0) {
		t.Fatalf("plan %+v: want two GPUs other than GPU 0", plan)
	}
	c := configs()[KindVLLM]
	c.TensorParallel, c.Devices = plan.TP, plan.Devices
	cmd, err := vllm{}.Command(c)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(cmd.Args, "--tensor-parallel-size")
	if i < 0 || cmd.Args[i+1] != "2" {
		t.Fatalf("args %v", cmd.Args)
	}
	ids := make([]string, len(plan.Devices))
	for i, d := range plan.Devices {
		ids[i] = strconv.Itoa(d)
	}
	want := []string{"CUDA_DEVICE_ORDER=PCI_BUS_ID", "CUDA_VISIBLE_DEVICES=" + strings.Join(ids, ",")}
	for _, w := range want {
		if !slices.Contains(cmd.Env, w) {
			t.Errorf("env lacks %s: %v", w, cmd.Env)
		}
	}
	// Without devices, CUDA picks: nothing is set.
	c.Devices = nil
	if cmd, err = (vllm{}).Command(c); err != nil {
		t.Fatal(err)
	}
	for _, e := range cmd.Env {
		if strings.HasPrefix(e, "CUDA_VISIBLE_DEVICES=") {
			t.Errorf("%s set without devices", e)
		}
	}
	// A device list that does not match the degree is refused.
	c.Devices = []int{1, 2, 3}
	if _, err := (vllm{}).Command(c); err == nil {
		t.Error("three devices for a degree of 2 were accepted")
	}
}
