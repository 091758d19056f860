package sizing

import (
	"fmt"
	"strings"
)

// ElementBytes returns the bytes one value of dtype takes in the KV cache.
// It knows the float types (bf16, f16, f32 and their spellings) and the 8-bit
// cache types (fp8 variants, int8, q8_0). It returns an error naming the
// dtype for anything else, so a typo in a manifest is never sized as zero.
func ElementBytes(dtype string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(dtype)) {
	case "f32", "fp32", "float32":
		return 4, nil
	case "bf16", "bfloat16", "f16", "fp16", "float16", "half":
		return 2, nil
	case "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_e4m3fn", "int8", "q8_0", "q8":
		return 1, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (known: bf16, f16, f32, fp8, int8, q8_0)", dtype)
}

// KVElementBytes picks the KV cache element size for a model: the explicit
// KV cache dtype when given; else the weight dtype when it is a float type;
// else 2 bytes, because quantized weights (AWQ, GPTQ, GGUF k-quants) keep
// their activations and KV cache in 16-bit floats in vLLM ("auto") and
// llama.cpp (f16) unless told otherwise.
func KVElementBytes(kvCacheDtype, dtype string) (int, error) {
	if kvCacheDtype != "" && !strings.EqualFold(kvCacheDtype, "auto") {
		n, err := ElementBytes(kvCacheDtype)
		if err != nil {
			return 0, fmt.Errorf("kvCacheDtype: %w", err)
		}
		return n, nil
	}
	switch strings.ToLower(dtype) {
	case "f32", "fp32", "float32":
		return 4, nil
	}
	return 2, nil
}
