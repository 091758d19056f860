package preflight

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/sizing"
)

// weightExtensions are the files counted as weights when the manifest gives
// neither model.weightsBytes nor runtime.modelPath.
var weightExtensions = []string{".safetensors", ".gguf", ".bin", ".pt", ".pth"}

// modelFacts takes what sizing needs from the manifest. The weights are
// model.weightsBytes; without it, the files under runtime.modelPath; without
// that, the files that look like weights.
func modelFacts(m *manifests.Manifest) (sizing.Model, error) {
	kv, err := sizing.KVElementBytes(m.Model.KVCacheDtype, m.Model.Dtype)
	if err != nil {
		return sizing.Model{}, fmt.Errorf("%w: model.%w", ErrModelFacts, err)
	}
	weights := m.Model.WeightsBytes
	if weights == 0 {
		weights = weightsFromFiles(m)
	}
	model := sizing.Model{
		Layers: m.Model.Layers, AttentionHeads: m.Model.AttentionHeads, KVHeads: m.Model.KVHeads,
		HeadDim: m.Model.HeadDim, KVElementBytes: kv, WeightsBytes: weights, MaxContext: m.Model.MaxContext,
	}
	if model.HeadDim == 0 && m.Model.HiddenSize > 0 && m.Model.AttentionHeads > 0 {
		model.HeadDim = m.Model.HiddenSize / m.Model.AttentionHeads
	}
	if err := model.Validate(); err != nil {
		if weights == 0 {
			err = errors.New("model.weightsBytes: not given, and no model files are listed")
		}
		return sizing.Model{}, fmt.Errorf("%w: %s: %w", ErrModelFacts, m.Name, err)
	}
	return model, nil
}

func weightsFromFiles(m *manifests.Manifest) int64 {
	var n int64
	if p := strings.Trim(m.Runtime.ModelPath, "/"); p != "" {
		for _, f := range m.Files {
			if f.Path == p || strings.HasPrefix(f.Path, p+"/") {
				n += f.Size
			}
		}
		return n
	}
	for _, f := range m.Files {
		for _, ext := range weightExtensions {
			if strings.HasSuffix(f.Path, ext) {
				n += f.Size
			}
		}
	}
	return n
}

// request turns the operator's options and the manifest's runtime settings
// into a sizing request.
func request(m *manifests.Manifest, model sizing.Model, opts Options) (sizing.Request, error) {
	req := sizing.Request{
		Context:     opts.Context,
		Concurrency: opts.Concurrency,
		MinContext:  m.Requirements.MinContext,
		Overhead:    m.Runtime.OverheadBytes,
		Utilization: m.Runtime.GPUMemoryUtilization,
	}
	if req.Context == 0 {
		req.Context = m.Runtime.DefaultContext
	}
	if req.Context == 0 {
		req.Context = model.MaxContext
	}
	switch {
	case req.Context < 0 || req.Context > model.MaxContext:
		return req, fmt.Errorf("%w: context %d: %s supports 1 to %d tokens", ErrOptions, req.Context, m.Model.Name, model.MaxContext)
	case req.Concurrency < 0:
		return req, fmt.Errorf("%w: concurrency %d is negative", ErrOptions, req.Concurrency)
	}
	if req.Concurrency == 0 {
		req.Concurrency = 1
	}
	return req, nil
}

// quantized reports whether the weight dtype is already a 4/8-bit format,
// where "use a quantized bundle" is no way out.
func quantized(dtype string) bool {
	d := strings.ToLower(dtype)
	for _, q := range []string{"awq", "gptq", "int4", "int8", "q4", "q5", "q6", "q8", "fp8"} {
		if strings.Contains(d, q) {
			return true
		}
	}
	return false
}

// memoryCheck explains a sizing result in a report line. unit names the
// device ("GPU" or "RAM"); deviceName names the limiting one ("GPU0").
func memoryCheck(m *manifests.Manifest, res sizing.Result, req sizing.Request, mode Mode, deviceName string, deviceTotal, deviceUsed int64) Check {
	per := " per GPU"
	if mode == CPU {
		per = ""
	}
	seqs := fmt.Sprintf("a %d-token context", res.RequestedContext)
	if res.Concurrency > 1 {
		seqs = fmt.Sprintf("%d sequences of %d tokens", res.Concurrency, res.RequestedContext)
	}
	c := Check{
		Name: "model memory",
		Required: fmt.Sprintf("%s%s for %s (weights %s + KV %s + overhead %s)",
			sizing.Bytes(res.Need), per, seqs, sizing.Bytes(res.Weights), sizing.Bytes(res.Need-res.Weights-res.Overhead), sizing.Bytes(res.Overhead)),
		Found: fmt.Sprintf("%s has %s usable (%.0f%% of %s, %s in use)", deviceName, sizing.Bytes(res.Budget),
			res.Utilization*100, sizing.Bytes(deviceTotal), sizing.Bytes(deviceUsed)),
	}
	shortfall := fmt.Sprintf("needs %s%s for %s, %s has %s", sizing.Bytes(res.Need), per, seqs, deviceName, sizing.Bytes(res.Budget))
	switch res.Verdict {
	case sizing.Fits:
		c.Status = Pass
		c.Found += fmt.Sprintf("; %d such sequences fit at once", res.MaxConcurrency)
	case sizing.Reduced:
		c.Status = Warn
		c.Fix = fmt.Sprintf("%s: use --max-context %d", shortfall, res.Context)
		if res.Concurrency > 1 {
			fitAtFull := int((res.Budget - res.Weights - res.Overhead) / (res.KVPerToken * int64(res.RequestedContext)))
			if fitAtFull >= 1 {
				c.Fix += fmt.Sprintf(", or --concurrency %d", fitAtFull)
			}
		}
		if !quantized(m.Model.Dtype) {
			c.Fix += ", or a quantized (AWQ/GPTQ) bundle"
		}
	default:
		c.Status = Fail
		// Even the shortest useful context does not fit: say by how much.
		needTotal := int64(float64(res.NeedMin+deviceUsed) / res.Utilization)
		c.Fix = fmt.Sprintf("%s; even a %d-token context needs %s%s", shortfall, res.MinContext, sizing.Bytes(res.NeedMin), per)
		var ways []string
		if !quantized(m.Model.Dtype) {
			ways = append(ways, "use a quantized (AWQ/GPTQ) bundle of the model")
		}
		if mode == GPU {
			if deviceUsed > 0 {
				ways = append(ways, fmt.Sprintf("stop the processes holding %s on %s", sizing.Bytes(deviceUsed), deviceName))
			}
			ways = append(ways, fmt.Sprintf("use GPUs with at least %s each", sizing.Bytes(needTotal)))
		} else {
			ways = append(ways, fmt.Sprintf("free or add memory: at least %s available", sizing.Bytes(needTotal)))
		}
		c.Fix += ": " + strings.Join(ways, ", or ")
	}
	return c
}
