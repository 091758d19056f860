// Package sizing computes whether a model fits on a set of GPUs (or in host
// RAM): weights plus KV cache plus runtime overhead, split across a
// tensor-parallel group, against what the runtime may use. It is pure
// arithmetic and never reads the host.
package sizing

import (
	"errors"
	"fmt"
	"sort"
)

// GiB is 2^30 bytes, the unit every message uses.
const GiB = 1 << 30

// Defaults used when the manifest leaves a value out.
const (
	// DefaultUtilization is vLLM's default --gpu-memory-utilization: the
	// share of each GPU's total memory the runtime may take.
	DefaultUtilization = 0.9
	// DefaultGPUOverhead is what one GPU needs besides weights and KV cache:
	// the CUDA context and cuBLAS workspaces (~0.5 GiB), vLLM's activation
	// peak while profiling a full batch of prefill tokens and its CUDA graphs
	// (~1 GiB for a 7B model). Manifests override it with
	// runtime.overheadBytes.
	DefaultGPUOverhead = 3 * GiB / 2
	// DefaultCPUOverhead is the CPU runtime's compute buffers and the
	// process itself (llama.cpp needs a few hundred MiB for a 7B model).
	DefaultCPUOverhead = GiB / 2
	// DefaultMinContext is the smallest context worth serving when the
	// manifest does not say (requirements.minContext).
	DefaultMinContext = 2048
	// blockTokens is the KV cache block size of vLLM; contexts are whole
	// blocks.
	blockTokens = 16
)

// Model holds the facts about a model that sizing needs.
type Model struct {
	Layers         int
	AttentionHeads int
	KVHeads        int
	HeadDim        int
	KVElementBytes int   // bytes per KV cache value (see KVElementBytes)
	WeightsBytes   int64 // bytes of weights loaded onto the devices
	MaxContext     int   // longest context the model supports
}

// Validate names the first missing or impossible fact.
func (m Model) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"model.layers", int64(m.Layers)}, {"model.attentionHeads", int64(m.AttentionHeads)},
		{"model.kvHeads", int64(m.KVHeads)}, {"model.headDim", int64(m.HeadDim)},
		{"KV element bytes", int64(m.KVElementBytes)}, {"model.weightsBytes", m.WeightsBytes},
		{"model.maxContext", int64(m.MaxContext)},
	} {
		if f.v <= 0 {
			return fmt.Errorf("%s: must be positive, got %d", f.name, f.v)
		}
	}
	if m.AttentionHeads%m.KVHeads != 0 {
		return fmt.Errorf("model.kvHeads: %d does not divide model.attentionHeads %d", m.KVHeads, m.AttentionHeads)
	}
	return nil
}

// ValidTP reports whether weights and attention can be split across tp GPUs
// the way vLLM does it: the query heads must divide evenly, and the KV heads
// must either divide evenly (tp ≤ KV heads) or be replicated whole (tp a
// multiple of the KV heads).
func (m Model) ValidTP(tp int) bool {
	if tp < 1 || m.AttentionHeads%tp != 0 {
		return false
	}
	if tp <= m.KVHeads {
		return m.KVHeads%tp == 0
	}
	return tp%m.KVHeads == 0
}

// TPDegrees lists the valid tensor-parallel degrees up to maxGPUs, ascending.
func (m Model) TPDegrees(maxGPUs int) []int {
	var out []int
	for tp := 1; tp <= maxGPUs; tp++ {
		if m.ValidTP(tp) {
			out = append(out, tp)
		}
	}
	return out
}

// KVBytesPerToken is the KV cache one token takes on each GPU of a group of
// tp: keys and values, for every layer, for the KV heads that GPU holds
// (replicated heads count on every GPU that holds them).
func (m Model) KVBytesPerToken(tp int) int64 {
	heads := max(1, m.KVHeads/max(tp, 1))
	return 2 * int64(m.Layers) * int64(heads) * int64(m.HeadDim) * int64(m.KVElementBytes)
}

// WeightsPerGPU is the share of the weights each GPU of a group of tp holds.
func (m Model) WeightsPerGPU(tp int) int64 {
	return (m.WeightsBytes + int64(tp) - 1) / int64(tp)
}

// Request is what the operator asks for.
type Request struct {
	Context     int     // tokens per sequence; the model's maximum when 0
	Concurrency int     // sequences held at full context at once; 1 when 0
	MinContext  int     // below this the model is not worth serving; DefaultMinContext when 0
	Overhead    int64   // per-GPU runtime overhead in bytes; DefaultGPUOverhead when 0
	Utilization float64 // share of total memory the runtime may take; DefaultUtilization when 0
}

func (r Request) withDefaults(m Model) Request {
	if r.Context == 0 {
		r.Context = m.MaxContext
	}
	if r.Concurrency == 0 {
		r.Concurrency = 1
	}
	if r.MinContext == 0 {
		r.MinContext = min(DefaultMinContext, m.MaxContext)
	}
	if r.Overhead == 0 {
		r.Overhead = DefaultGPUOverhead
	}
	if r.Utilization == 0 {
		r.Utilization = DefaultUtilization
	}
	return r
}

// Device is one GPU (or the host's RAM) as sizing sees it.
type Device struct {
	Index int
	Total int64 // memory the device has
	Used  int64 // memory other processes (and the driver) hold now
}

// Budget is what the runtime may take on d: utilization × total, less what
// is already used, since vLLM's share is counted against total memory.
func (d Device) Budget(utilization float64) int64 {
	return max(0, int64(float64(d.Total)*utilization)-d.Used)
}

// Verdict is the outcome of Plan.
type Verdict string

// Verdicts, from best to worst.
const (
	Fits        Verdict = "fits"         // the requested context and concurrency fit
	Reduced     Verdict = "reduced"      // only a shorter context (at least MinContext) fits
	DoesNotFit  Verdict = "does-not-fit" // not even MinContext fits
	unsetResult Verdict = ""
)

// Result is the plan Plan chose, with the numbers that explain it. All byte
// figures are per GPU.
type Result struct {
	Verdict     Verdict `json:"verdict"`
	TP          int     `json:"tensorParallel"`
	Devices     []int   `json:"devices"`     // indices of the GPUs to use
	Context     int     `json:"context"`     // context to configure (requested, or the reduced one)
	Concurrency int     `json:"concurrency"` // sequences requested
	// MaxContext is the longest context that fits at the requested
	// concurrency (capped at the model's maximum), in whole KV blocks.
	MaxContext int `json:"maxContext"`
	// MaxConcurrency is how many sequences of Context tokens fit at once.
	MaxConcurrency int `json:"maxConcurrency"`

	RequestedContext int     `json:"requestedContext"`
	Weights          int64   `json:"weightsBytes"`
	KVPerToken       int64   `json:"kvBytesPerToken"`
	Overhead         int64   `json:"overheadBytes"`
	Need             int64   `json:"needBytes"`    // at the requested context and concurrency
	NeedMin          int64   `json:"needMinBytes"` // at MinContext and the requested concurrency
	Budget           int64   `json:"budgetBytes"`  // smallest budget in the group
	Utilization      float64 `json:"utilization"`
	MinContext       int     `json:"minContext"`
	Limiting         int     `json:"limitingDevice"` // index of the GPU with the smallest budget
}

// Need is the memory one GPU of a group of tp needs for context tokens ×
// concurrency sequences.
func Need(m Model, tp, context, concurrency int, overhead int64) int64 {
	return m.WeightsPerGPU(tp) + m.KVBytesPerToken(tp)*int64(context)*int64(concurrency) + overhead
}

// ErrNoDevices is returned by Plan when it is given no device to plan on.
var ErrNoDevices = errors.New("no usable device")

// Plan chooses a tensor-parallel group from devs and the context to serve.
// It prefers the smallest valid TP degree that fits the requested context
// and concurrency (fewest GPUs, no cross-GPU traffic when one is enough);
// when none does, the TP degree that allows the longest context, reported
// as Reduced when that is at least MinContext and DoesNotFit otherwise.
// Within a degree it takes the GPUs with the largest budgets.
//
// It returns an error when the model facts are incomplete, the request is
// impossible (a context longer than the model's), or devs is empty
// (ErrNoDevices).
func Plan(m Model, req Request, devs []Device) (Result, error) {
	if err := m.Validate(); err != nil {
		return Result{}, err
	}
	req = req.withDefaults(m)
	switch {
	case req.Context < 1 || req.Context > m.MaxContext:
		return Result{}, fmt.Errorf("context %d is outside the model's 1-%d tokens", req.Context, m.MaxContext)
	case req.Concurrency < 1:
		return Result{}, fmt.Errorf("concurrency %d must be at least 1", req.Concurrency)
	case req.Utilization <= 0 || req.Utilization > 1:
		return Result{}, fmt.Errorf("utilization %v is not in (0, 1]", req.Utilization)
	case req.Overhead < 0:
		return Result{}, fmt.Errorf("overhead %d is negative", req.Overhead)
	}
	if len(devs) == 0 {
		return Result{}, ErrNoDevices
	}
	req.MinContext = min(req.MinContext, req.Context)

	// Largest budget first; equal budgets keep index order.
	sorted := append([]Device(nil), devs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return sorted[i].Budget(req.Utilization) > sorted[j].Budget(req.Utilization)
	})

	var best Result
	for _, tp := range m.TPDegrees(len(sorted)) {
		r := evaluate(m, req, sorted[:tp])
		if r.Verdict == Fits {
			return r, nil
		}
		if best.Verdict == unsetResult || better(r, best) {
			best = r
		}
	}
	if best.Verdict == unsetResult {
		// No valid degree fits the device count (cannot happen: 1 is always valid).
		return Result{}, fmt.Errorf("no valid tensor-parallel degree for %d attention heads and %d KV heads", m.AttentionHeads, m.KVHeads)
	}
	return best, nil
}

// better reports whether a is a better fallback than b: a longer context, or,
// when neither fits at all, a smaller shortfall at the minimum context.
func better(a, b Result) bool {
	if a.MaxContext != b.MaxContext {
		return a.MaxContext > b.MaxContext
	}
	return a.NeedMin-a.Budget < b.NeedMin-b.Budget
}

// evaluate sizes the model on exactly the devices in group.
func evaluate(m Model, req Request, group []Device) Result {
	tp := len(group)
	limiting := group[len(group)-1]
	budget := limiting.Budget(req.Utilization)
	r := Result{
		TP:               tp,
		Concurrency:      req.Concurrency,
		RequestedContext: req.Context,
		Weights:          m.WeightsPerGPU(tp),
		KVPerToken:       m.KVBytesPerToken(tp),
		Overhead:         req.Overhead,
		Need:             Need(m, tp, req.Context, req.Concurrency, req.Overhead),
		NeedMin:          Need(m, tp, req.MinContext, req.Concurrency, req.Overhead),
		Budget:           budget,
		Utilization:      req.Utilization,
		MinContext:       req.MinContext,
		Limiting:         limiting.Index,
	}
	for _, d := range group {
		r.Devices = append(r.Devices, d.Index)
	}
	sort.Ints(r.Devices)

	room := budget - r.Weights - r.Overhead
	if room > 0 {
		tokens := room / r.KVPerToken
		r.MaxContext = int(min(tokens/int64(req.Concurrency), int64(m.MaxContext)))
		r.MaxContext -= r.MaxContext % blockTokens
	}
	switch {
	case r.MaxContext >= req.Context:
		r.Verdict = Fits
		r.Context = req.Context
	case r.MaxContext >= req.MinContext:
		r.Verdict = Reduced
		r.Context = max(RoundContext(r.MaxContext), req.MinContext)
	default:
		r.Verdict = DoesNotFit
		r.Context = 0
	}
	if r.Context > 0 {
		r.MaxConcurrency = int(room / (r.KVPerToken * int64(r.Context)))
	}
	return r
}

// RoundContext rounds a context down to a figure an operator would type:
// a multiple of 1024 tokens from 1024 up, else whole KV blocks.
func RoundContext(tokens int) int {
	if tokens >= 1024 {
		return tokens - tokens%1024
	}
	return tokens - tokens%blockTokens
}

// Bytes formats n as GiB with one decimal, the unit every message uses, or
// as whole MiB below 1 GiB so small figures do not read "0.0 GiB".
func Bytes(n int64) string {
	if n < GiB && n > -GiB {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/GiB)
}
