package sizing

import (
	"reflect"
	"testing"
)

// qwen7B is Qwen2.5-7B-Instruct in bf16 (REFERENCE.md): 28 layers, 28 query
// heads, 4 KV heads, head dim 128, 15.2 GB of weights, 32768 tokens.
var qwen7B = Model{
	Layers: 28, AttentionHeads: 28, KVHeads: 4, HeadDim: 128,
	KVElementBytes: 2, WeightsBytes: 15_231_233_024, MaxContext: 32768,
}

const mib = 1 << 20

func gpu(index int, totalMiB, usedMiB int64) Device {
	return Device{Index: index, Total: totalMiB * mib, Used: usedMiB * mib}
}

func TestKVBytesPerToken(t *testing.T) {
	// 2 × 28 × 4 × 128 × 2 B = 57,344 B (56 KiB), REFERENCE.md.
	if got := qwen7B.KVBytesPerToken(1); got != 57344 {
		t.Fatalf("KVBytesPerToken(1) = %d, want 57344", got)
	}
	if got := qwen7B.KVBytesPerToken(2); got != 28672 {
		t.Fatalf("KVBytesPerToken(2) = %d, want 28672", got)
	}
	// TP 28 replicates the 4 KV heads: one head per GPU.
	if got := qwen7B.KVBytesPerToken(28); got != 57344/4 {
		t.Fatalf("KVBytesPerToken(28) = %d, want %d", got, 57344/4)
	}
	// One 32K sequence ≈ 1.75 GiB.
	if got := qwen7B.KVBytesPerToken(1) * 32768; got != 1792*mib {
		t.Fatalf("32K sequence = %d bytes, want 1.75 GiB", got)
	}
}

func TestTPDegrees(t *testing.T) {
	for _, tc := range []struct {
		m    Model
		n    int
		want []int
	}{
		{qwen7B, 8, []int{1, 2, 4}},
		{qwen7B, 3, []int{1, 2}},
		{qwen7B, 28, []int{1, 2, 4, 28}},
		// Qwen2.5-72B: 64 heads, 8 KV heads.
		{Model{AttentionHeads: 64, KVHeads: 8}, 8, []int{1, 2, 4, 8}},
		// Qwen2.5-14B: 40 heads, 8 KV heads; 5 divides 40 but not 8.
		{Model{AttentionHeads: 40, KVHeads: 8}, 8, []int{1, 2, 4, 8}},
		// Multi-head attention: every divisor of the head count.
		{Model{AttentionHeads: 12, KVHeads: 12}, 8, []int{1, 2, 3, 4, 6}},
	} {
		if got := tc.m.TPDegrees(tc.n); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("TPDegrees(%d) for %d/%d heads = %v, want %v", tc.n, tc.m.AttentionHeads, tc.m.KVHeads, got, tc.want)
		}
	}
}

func TestPlan(t *testing.T) {
	for _, tc := range []struct {
		name    string
		m       Model
		req     Request
		devs    []Device
		verdict Verdict
		tp      int
		devices []int
		context int
		maxCtx  int
		maxConc int
	}{
		{
			// 10.8 GiB budget cannot hold 14.2 GiB of weights.
			name: "RTX 3060 12 GB bf16", m: qwen7B, devs: []Device{gpu(0, 12288, 0)},
			verdict: DoesNotFit, tp: 1, devices: []int{0},
		},
		{
			// 21.6 GiB budget, 14.2 GiB weights, 1.5 GiB overhead: 5.9 GiB
			// of KV cache, 110k tokens: one full-context sequence fits,
			// three at once.
			name: "RTX 4090 24 GB", m: qwen7B, devs: []Device{gpu(0, 24564, 0)},
			verdict: Fits, tp: 1, devices: []int{0}, context: 32768, maxCtx: 32768, maxConc: 3,
		},
		{
			// Four concurrent full-context sequences need 7 GiB of KV
			// cache; 5.9 GiB holds four of 27.6k tokens, rounded to 26624.
			name: "RTX 4090 24 GB, 4 sequences", m: qwen7B, req: Request{Concurrency: 4},
			devs:    []Device{gpu(0, 24564, 0)},
			verdict: Reduced, tp: 1, devices: []int{0}, context: 26624, maxCtx: 27632, maxConc: 4,
		},
		{
			name: "A10 24 GB", m: qwen7B, devs: []Device{gpu(0, 23028, 0)},
			verdict: Fits, tp: 1, devices: []int{0}, context: 32768, maxCtx: 32768, maxConc: 2,
		},
		{
			name: "A100 40 GB", m: qwen7B, devs: []Device{gpu(0, 40960, 0)},
			verdict: Fits, tp: 1, devices: []int{0}, context: 32768, maxCtx: 32768, maxConc: 11,
		},
		{
			name: "H100 80 GB", m: qwen7B, devs: []Device{gpu(0, 81920, 0)},
			verdict: Fits, tp: 1, devices: []int{0}, context: 32768, maxCtx: 32768, maxConc: 32,
		},
		{
			// Two 3060s: TP 2 puts 7.1 GiB of weights on each.
			name: "2× RTX 3060", m: qwen7B, devs: []Device{gpu(0, 12288, 0), gpu(1, 12288, 0)},
			verdict: Fits, tp: 2, devices: []int{0, 1}, context: 32768, maxCtx: 32768, maxConc: 2,
		},
		{
			// Three 3060s: TP 3 is not valid for 28/4 heads, so two are used.
			name: "3× RTX 3060", m: qwen7B, devs: []Device{gpu(0, 12288, 0), gpu(1, 12288, 0), gpu(2, 12288, 0)},
			verdict: Fits, tp: 2, devices: []int{0, 1}, context: 32768, maxCtx: 32768, maxConc: 2,
		},
		{
			// GPU0 is busy with another process; GPU1 is idle and is chosen.
			name: "busy first GPU", m: qwen7B, devs: []Device{gpu(0, 24564, 12000), gpu(1, 24564, 0)},
			verdict: Fits, tp: 1, devices: []int{1}, context: 32768, maxCtx: 32768, maxConc: 3,
		},
		{
			// Another process holds 8 GiB of a 4090: 13.6 GiB left.
			name: "busy single GPU", m: qwen7B, devs: []Device{gpu(0, 24564, 8192)},
			verdict: DoesNotFit, tp: 1, devices: []int{0},
		},
		{
			// An explicit shorter context on the 3060 still does not fit.
			name: "RTX 3060, short context", m: qwen7B, req: Request{Context: 4096}, devs: []Device{gpu(0, 12288, 0)},
			verdict: DoesNotFit, tp: 1, devices: []int{0},
		},
		{
			// AWQ int4 weights (5.6 GB) on the 3060: 3.5 GiB of KV cache.
			name: "RTX 3060 AWQ", m: func() Model { m := qwen7B; m.WeightsBytes = 5_583_457_485; return m }(),
			devs:    []Device{gpu(0, 12288, 0)},
			verdict: Fits, tp: 1, devices: []int{0}, context: 32768, maxCtx: 32768, maxConc: 2,
		},
		{
			// A full 128K context needs 7 GiB per sequence.
			name: "RTX 4090 128K YaRN", m: func() Model { m := qwen7B; m.MaxContext = 131072; return m }(),
			devs:    []Device{gpu(0, 24564, 0)},
			verdict: Reduced, tp: 1, devices: []int{0}, context: 109568, maxCtx: 110544, maxConc: 1,
		},
		{
			// Lower utilization shrinks the budget: 0.7 × 24 GiB = 16.8 GiB.
			name: "RTX 4090 at 70%", m: qwen7B, req: Request{Utilization: 0.7}, devs: []Device{gpu(0, 24564, 0)},
			verdict: Reduced, tp: 1, devices: []int{0}, context: 20480, maxCtx: 20720, maxConc: 1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Plan(tc.m, tc.req, tc.devs)
			if err != nil {
				t.Fatal(err)
			}
			if r.Verdict != tc.verdict || r.TP != tc.tp || !reflect.DeepEqual(r.Devices, tc.devices) {
				t.Fatalf("verdict %s TP %d devices %v, want %s TP %d devices %v (need %s, budget %s)",
					r.Verdict, r.TP, r.Devices, tc.verdict, tc.tp, tc.devices, Bytes(r.Need), Bytes(r.Budget))
			}
			if r.Context != tc.context || r.MaxContext != tc.maxCtx || r.MaxConcurrency != tc.maxConc {
				t.Fatalf("context %d max %d concurrency %d, want %d, %d, %d",
					r.Context, r.MaxContext, r.MaxConcurrency, tc.context, tc.maxCtx, tc.maxConc)
			}
			// Whatever was chosen must really fit.
			if r.Context > 0 {
				if need := Need(tc.m, r.TP, r.Context, r.Concurrency, r.Overhead); need > r.Budget {
					t.Fatalf("chosen context %d needs %s > budget %s", r.Context, Bytes(need), Bytes(r.Budget))
				}
			}
		})
	}
}

func TestPlanNumbers(t *testing.T) {
	// The numbers a shortfall message quotes: 3060, 32K context.
	r, err := Plan(qwen7B, Request{}, []Device{gpu(0, 12288, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Bytes(r.Need), "17.4 GiB"; got != want {
		t.Errorf("need = %s, want %s", got, want)
	}
	if got, want := Bytes(r.Budget), "10.8 GiB"; got != want {
		t.Errorf("budget = %s, want %s", got, want)
	}
	if got, want := Bytes(r.Weights), "14.2 GiB"; got != want {
		t.Errorf("weights = %s, want %s", got, want)
	}
}

func TestPlanErrors(t *testing.T) {
	one := []Device{gpu(0, 81920, 0)}
	for _, tc := range []struct {
		name string
		m    Model
		req  Request
		devs []Device
	}{
		{"context too long", qwen7B, Request{Context: 65536}, one},
		{"negative concurrency", qwen7B, Request{Concurrency: -1}, one},
		{"utilization above 1", qwen7B, Request{Utilization: 1.5}, one},
		{"no devices", qwen7B, Request{}, nil},
		{"no layers", func() Model { m := qwen7B; m.Layers = 0; return m }(), Request{}, one},
		{"kv heads do not divide", func() Model { m := qwen7B; m.KVHeads = 3; return m }(), Request{}, one},
		{"no weights", func() Model { m := qwen7B; m.WeightsBytes = 0; return m }(), Request{}, one},
	} {
		if _, err := Plan(tc.m, tc.req, tc.devs); err == nil {
			t.Errorf("%s: Plan succeeded", tc.name)
		}
	}
}

func TestElementBytes(t *testing.T) {
	for dtype, want := range map[string]int{"bf16": 2, "F16": 2, "float32": 4, "fp8": 1, "fp8_e5m2": 1, "q8_0": 1} {
		if got, err := ElementBytes(dtype); err != nil || got != want {
			t.Errorf("ElementBytes(%q) = %d, %v; want %d", dtype, got, err, want)
		}
	}
	if _, err := ElementBytes("bf61"); err == nil {
		t.Error("ElementBytes accepted a typo")
	}
	for _, tc := range []struct {
		kv, w string
		want  int
	}{
		{"", "bf16", 2}, {"", "f32", 4}, {"fp8", "bf16", 1}, {"", "awq-int4", 2}, {"auto", "q4_k_m", 2},
	} {
		if got, err := KVElementBytes(tc.kv, tc.w); err != nil || got != tc.want {
			t.Errorf("KVElementBytes(%q, %q) = %d, %v; want %d", tc.kv, tc.w, got, err, tc.want)
		}
	}
	if _, err := KVElementBytes("int3", "bf16"); err == nil {
		t.Error("KVElementBytes accepted an unknown cache dtype")
	}
}

func TestRoundContext(t *testing.T) {
	for in, want := range map[int]int{32768: 32768, 27632: 26624, 1000: 992, 1024: 1024, 15: 0} {
		if got := RoundContext(in); got != want {
			t.Errorf("RoundContext(%d) = %d, want %d", in, got, want)
		}
	}
}
