package demomodel

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// The model's shape. Small enough to load and answer in well under a second
// on one CPU core, large enough to exercise grouped-query attention (4 query
// heads sharing 2 key/value heads) and more than one block.
const (
	Embedding   = 64
	Heads       = 4
	KVHeads     = 2
	HeadDim     = Embedding / Heads
	feedForward = 128
	Blocks      = 2
	Context     = 4096
	ropeBase    = 1000000
	rmsEpsilon  = 1e-6
)

// modelName is the model's name in its manifest; ServedName is the name clients
// ask the inference server for.
const (
	modelName  = "qwen-appliance/demo-qwen2-tiny"
	ServedName = "demo"
	// modelPath is where the bundle carries the file, relative to its root.
	modelPath = "model/demo.gguf"
)

// chatTemplate is Qwen's ChatML template, spelled exactly as Ollama's
// built-in "chatml" template so that Ollama recognises it.
const chatTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// Special tokens, appended after the byte tokens and merges as Qwen does.
var specials = []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}

// merges are a handful of byte-pair merges in GPT-2 spelling ("Ġ" is a space).
// Every result is itself a token, which llama.cpp's BPE tokenizer requires.
var merges = [][2]string{{"Ġ", "t"}, {"h", "e"}, {"i", "n"}, {"e", "r"}, {"Ġt", "he"}}

// seed fixes the weights; changing it changes the golden hash.
var seed = [2]uint64{0x7177656e, 0x64656d6f} // "qwen", "demo"

// tensor is one weight tensor to write: name and dimensions, innermost first.
type tensor struct {
	name string
	dims []uint64
	fill func(i int) float32 // nil: random
}

func (t tensor) elements() uint64 {
	n := uint64(1)
	for _, d := range t.dims {
		n *= d
	}
	return n
}

// vocab returns the tokens (byte tokens in GPT-2's byte-to-unicode spelling,
// merge results, specials), their types, and the merges in "a b" form.
func vocab() (tokens []string, types []int32, mergeList []string) {
	for b := range 256 {
		tokens = append(tokens, string(byteRune(byte(b))))
		types = append(types, 1) // normal
	}
	for _, m := range merges {
		tokens = append(tokens, m[0]+m[1])
		types = append(types, 1)
		mergeList = append(mergeList, m[0]+" "+m[1])
	}
	for _, s := range specials {
		tokens = append(tokens, s)
		types = append(types, 3) // control
	}
	return tokens, types, mergeList
}

// byteRune is GPT-2's byte-to-unicode mapping: printable Latin-1 bytes stand
// for themselves, the others are shifted to U+0100 and beyond in byte order.
func byteRune(b byte) rune {
	if printableByte(b) {
		return rune(b)
	}
	n := 0
	for c := range int(b) {
		if !printableByte(byte(c)) {
			n++
		}
	}
	return rune(256 + n)
}

func printableByte(b byte) bool {
	return ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
}

// tokenID returns the index of tok in tokens.
func tokenID(tokens []string, tok string) int32 {
	for i, t := range tokens {
		if t == tok {
			return int32(i)
		}
	}
	panic("demomodel: no token " + tok)
}

func tensors(nVocab int, tokens []string) []tensor {
	ones := func(int) float32 { return 1 }
	kv := uint64(HeadDim * KVHeads)
	ts := []tensor{
		{name: "token_embd.weight", dims: []uint64{Embedding, uint64(nVocab)}},
		{name: "output_norm.weight", dims: []uint64{Embedding}, fill: ones},
	}
	for b := range Blocks {
		p := fmt.Sprintf("blk.%d.", b)
		ts = append(ts,
			tensor{name: p + "attn_norm.weight", dims: []uint64{Embedding}, fill: ones},
			tensor{name: p + "attn_q.weight", dims: []uint64{Embedding, Embedding}},
			tensor{name: p + "attn_q.bias", dims: []uint64{Embedding}},
			tensor{name: p + "attn_k.weight", dims: []uint64{Embedding, kv}},
			tensor{name: p + "attn_k.bias", dims: []uint64{kv}},
			tensor{name: p + "attn_v.weight", dims: []uint64{Embedding, kv}},
			tensor{name: p + "attn_v.bias", dims: []uint64{kv}},
			tensor{name: p + "attn_output.weight", dims: []uint64{Embedding, Embedding}},
			tensor{name: p + "ffn_norm.weight", dims: []uint64{Embedding}, fill: ones},
			tensor{name: p + "ffn_gate.weight", dims: []uint64{Embedding, feedForward}},
			tensor{name: p + "ffn_up.weight", dims: []uint64{Embedding, feedForward}},
			tensor{name: p + "ffn_down.weight", dims: []uint64{feedForward, Embedding}},
		)
	}
	// The output projection gets zero rows for everything but printable ASCII
	// (and the merges, which are printable): with random rows elsewhere, the
	// largest logit is then almost surely a printable token, so greedy
	// decoding produces readable noise and never stops on its own; the smoke
	// test bounds it with max_tokens.
	rng := newRNG()
	out := make([]float32, Embedding*nVocab)
	for id, tok := range tokens {
		if !readable(tok) {
			continue
		}
		for j := range Embedding {
			out[id*Embedding+j] = rng.weight()
		}
	}
	ts = append(ts, tensor{name: "output.weight", dims: []uint64{Embedding, uint64(nVocab)}, fill: func(i int) float32 { return out[i] }})
	return ts
}

// readable reports whether a token spells printable ASCII (a space is "Ġ").
func readable(tok string) bool {
	for _, r := range tok {
		if r != 'Ġ' && (r < ' ' || r > '~') {
			return false
		}
	}
	return tok != "" && tok[0] != '<'
}

// rng draws weights from PCG, whose output sequence is fixed by its
// definition, converting bits to floats here rather than trusting a library
// conversion that could change between Go releases.
type rng struct{ p *rand.PCG }

func newRNG() rng { return rng{rand.NewPCG(seed[0], seed[1])} }

// weight returns a value uniformly spread over [-0.25, 0.25).
func (r rng) weight() float32 {
	u := float32(r.p.Uint64()>>40) / (1 << 24) // [0, 1) in 24-bit steps
	return (u - 0.5) / 2
}

// Write writes the demo model as a GGUF v3 file to w. The bytes are the same
// on every run and every platform.
func Write(w io.Writer) error {
	tokens, types, mergeList := vocab()
	ts := tensors(len(tokens), tokens)
	var params uint64
	for _, t := range ts {
		params += t.elements()
	}

	e := &encoder{w: w}
	meta := []struct {
		key string
		val any
	}{
		{"general.architecture", "qwen2"},
		{"general.name", "demo-qwen2-tiny"},
		{"general.license", "Apache-2.0"},
		{"general.file_type", uint32(0)}, // all F32
		{"general.parameter_count", params},
		{"general.alignment", uint32(defaultAlignment)},
		{"qwen2.context_length", uint32(Context)},
		{"qwen2.embedding_length", uint32(Embedding)},
		{"qwen2.block_count", uint32(Blocks)},
		{"qwen2.feed_forward_length", uint32(feedForward)},
		{"qwen2.attention.head_count", uint32(Heads)},
		{"qwen2.attention.head_count_kv", uint32(KVHeads)},
		{"qwen2.attention.layer_norm_rms_epsilon", float32(rmsEpsilon)},
		{"qwen2.rope.freq_base", float32(ropeBase)},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", "qwen2"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.merges", mergeList},
		{"tokenizer.ggml.bos_token_id", uint32(tokenID(tokens, "<|endoftext|>"))},
		{"tokenizer.ggml.eos_token_id", uint32(tokenID(tokens, "<|im_end|>"))},
		{"tokenizer.ggml.padding_token_id", uint32(tokenID(tokens, "<|endoftext|>"))},
		{"tokenizer.ggml.add_bos_token", false},
		{"tokenizer.chat_template", chatTemplate},
	}

	e.bytes([]byte(ggufMagic))
	e.u32(ggufVersion)
	e.u64(uint64(len(ts)))
	e.u64(uint64(len(meta)))
	for _, m := range meta {
		e.kv(m.key, m.val)
	}
	var off uint64
	for _, t := range ts {
		e.str(t.name)
		e.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			e.u64(d)
		}
		e.u32(tensorF32)
		e.u64(off)
		off += alignUp(4*t.elements(), defaultAlignment)
	}
	e.pad(defaultAlignment)

	r := newRNG()
	r.p.Seed(seed[1], seed[0]) // a stream apart from the output projection's
	buf := make([]byte, 0, 4*Embedding*feedForward)
	for _, t := range ts {
		buf = buf[:0]
		for i := range int(t.elements()) {
			v := r.weight()
			if t.fill != nil {
				v = t.fill(i)
			}
			buf = appendF32(buf, v)
		}
		e.bytes(buf)
		e.pad(defaultAlignment)
	}
	if e.err != nil {
		return fmt.Errorf("write demo model: %w", e.err)
	}
	return nil
}

func appendF32(b []byte, v float32) []byte {
	u := math.Float32bits(v)
	return append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// Meta returns what a bundle manifest says about the demo model: its shape,
// its host requirements (any CPU, no accelerator) and how Ollama serves it.
func Meta() manifests.Meta {
	tokens, _, _ := vocab()
	var params uint64
	for _, t := range tensors(len(tokens), tokens) {
		params += t.elements()
	}
	return manifests.Meta{
		Model: manifests.Model{
			Name:           modelName,
			Architecture:   "qwen2",
			Format:         "gguf",
			Parameters:     int64(params),
			Layers:         Blocks,
			AttentionHeads: Heads,
			KVHeads:        KVHeads,
			HeadDim:        HeadDim,
			HiddenSize:     Embedding,
			Dtype:          "f32",
			KVCacheDtype:   "f16", // Ollama's default OLLAMA_KV_CACHE_TYPE
			MaxContext:     Context,
			WeightsBytes:   int64(4 * params),
			License:        "Apache-2.0",
		},
		Requirements: manifests.Requirements{
			// Ollama's server and runner processes, not the model, set the
			// floor: both together stay well under 1 GiB with this model.
			MinRAMBytes:  1 << 30,
			MinDiskBytes: 64 << 20,
			MinContext:   512,
		},
		Runtime: manifests.Runtime{
			Kind:            "ollama",
			Version:         "0.6.5",
			Devices:         []string{"cpu"},
			ModelPath:       modelPath,
			ServedModelName: ServedName,
			DefaultContext:  2048,
		},
		Provenance: manifests.Provenance{
			Source: "generated://qwen-appliance/demomodel",
		},
	}
}
