package demomodel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// goldenSHA256 pins the demo model's bytes. A change here changes every demo
// bundle's manifest; update it only on purpose.
const goldenSHA256 = "0e20a53031dcf38204b5f07b70477d2651b31ac579003d4584f1831e11d6f820"

func write(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestWriteIsDeterministic(t *testing.T) {
	a, b := write(t), write(t)
	if !bytes.Equal(a, b) {
		t.Fatal("two writes differ")
	}
	sum := sha256.Sum256(a)
	if got := hex.EncodeToString(sum[:]); got != goldenSHA256 {
		t.Errorf("sha256 = %s, want %s (size %d)", got, goldenSHA256, len(a))
	}
}

func TestHeaderReadsBack(t *testing.T) {
	data := write(t)
	h, err := ReadHeader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"general.architecture":                   "qwen2",
		"qwen2.context_length":                   uint32(Context),
		"qwen2.embedding_length":                 uint32(Embedding),
		"qwen2.block_count":                      uint32(Blocks),
		"qwen2.feed_forward_length":              uint32(feedForward),
		"qwen2.attention.head_count":             uint32(Heads),
		"qwen2.attention.head_count_kv":          uint32(KVHeads),
		"qwen2.attention.layer_norm_rms_epsilon": float32(1e-6),
		"qwen2.rope.freq_base":                   float32(1e6),
		"tokenizer.ggml.model":                   "gpt2",
		"tokenizer.ggml.pre":                     "qwen2",
		"tokenizer.chat_template":                chatTemplate,
	}
	for k, v := range want {
		got, ok := h.Lookup(k)
		if !ok {
			t.Errorf("%s missing", k)
			continue
		}
		if got != v {
			t.Errorf("%s = %v (%T), want %v (%T)", k, got, got, v, v)
		}
	}
	if len(h.Tensors) != 3+12*Blocks {
		t.Errorf("%d tensors, want %d", len(h.Tensors), 3+12*Blocks)
	}
	m := Meta()
	if got, _ := h.Lookup("general.parameter_count"); got != uint64(m.Model.Parameters) {
		t.Errorf("parameter_count %v, Meta says %d", got, m.Model.Parameters)
	}
}

// TestStructure checks what llama.cpp's loader checks: the tokenizer is
// consistent, every tensor has the shape the architecture needs, and the data
// section holds exactly the tensors, aligned and without overlap.
func TestStructure(t *testing.T) {
	data := write(t)
	h, err := ReadHeader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tokensV, _ := h.Lookup("tokenizer.ggml.tokens")
	typesV, _ := h.Lookup("tokenizer.ggml.token_type")
	mergesV, _ := h.Lookup("tokenizer.ggml.merges")
	tokens := map[string]int{}
	for i, v := range tokensV.([]any) {
		s := v.(string)
		if _, dup := tokens[s]; dup {
			t.Errorf("token %q listed twice", s)
		}
		tokens[s] = i
	}
	nVocab := len(tokens)
	if len(typesV.([]any)) != nVocab {
		t.Errorf("%d token types for %d tokens", len(typesV.([]any)), nVocab)
	}
	if len(mergesV.([]any)) == 0 {
		t.Error("no merges")
	}
	for _, v := range mergesV.([]any) {
		a, b, ok := strings.Cut(v.(string), " ")
		if !ok {
			t.Errorf("merge %q has no space", v)
			continue
		}
		for _, part := range []string{a, b, a + b} {
			if _, ok := tokens[part]; !ok {
				t.Errorf("merge %q: %q is not a token", v, part)
			}
		}
	}
	for b := range 256 {
		if _, ok := tokens[string(byteRune(byte(b)))]; !ok {
			t.Errorf("byte %#x has no token", b)
		}
	}
	for _, s := range []string{"<|im_start|>", "<|im_end|>", "<|endoftext|>"} {
		if _, ok := tokens[s]; !ok {
			t.Errorf("special %s missing", s)
		}
	}
	for _, k := range []string{"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"} {
		v, _ := h.Lookup(k)
		if id, ok := v.(uint32); !ok || int(id) >= nVocab {
			t.Errorf("%s = %v, not a token id", k, v)
		}
	}

	kv := uint64(HeadDim * KVHeads)
	shapes := map[string][]uint64{
		"token_embd.weight":  {Embedding, uint64(nVocab)},
		"output.weight":      {Embedding, uint64(nVocab)},
		"output_norm.weight": {Embedding},
	}
	for b := range Blocks {
		p := fmt.Sprintf("blk.%d.", b)
		for name, dims := range map[string][]uint64{
			"attn_norm.weight": {Embedding}, "ffn_norm.weight": {Embedding},
			"attn_q.weight": {Embedding, Embedding}, "attn_q.bias": {Embedding},
			"attn_k.weight": {Embedding, kv}, "attn_k.bias": {kv},
			"attn_v.weight": {Embedding, kv}, "attn_v.bias": {kv},
			"attn_output.weight": {Embedding, Embedding},
			"ffn_gate.weight":    {Embedding, feedForward}, "ffn_up.weight": {Embedding, feedForward},
			"ffn_down.weight": {feedForward, Embedding},
		} {
			shapes[p+name] = dims
		}
	}
	var end uint64
	for _, ti := range h.Tensors {
		want, ok := shapes[ti.Name]
		if !ok {
			t.Errorf("unexpected tensor %s", ti.Name)
			continue
		}
		delete(shapes, ti.Name)
		if fmt.Sprint(ti.Dims) != fmt.Sprint(want) {
			t.Errorf("%s dims %v, want %v", ti.Name, ti.Dims, want)
		}
		if ti.Type != tensorF32 {
			t.Errorf("%s type %d, want F32", ti.Name, ti.Type)
		}
		if ti.Offset < end {
			t.Errorf("%s at %d overlaps the previous tensor ending at %d", ti.Name, ti.Offset, end)
		}
		end = ti.Offset + 4*ti.Elements()
	}
	for name := range shapes {
		t.Errorf("tensor %s missing", name)
	}
	if got, want := uint64(len(data)), uint64(h.DataOffset)+alignUp(end, defaultAlignment); got != want {
		t.Errorf("file is %d bytes, header and tensors account for %d", got, want)
	}
	if len(data) < 400<<10 || len(data) > 480<<10 {
		t.Errorf("file is %d bytes, expected about 430 KB", len(data))
	}
}

func TestMetaMatchesFile(t *testing.T) {
	m := Meta()
	data := write(t)
	h, err := ReadHeader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var elems uint64
	for _, ti := range h.Tensors {
		elems += ti.Elements()
	}
	if m.Model.WeightsBytes != int64(4*elems) {
		t.Errorf("WeightsBytes %d, tensors hold %d", m.Model.WeightsBytes, 4*elems)
	}
	if m.Model.HeadDim*m.Model.AttentionHeads != m.Model.HiddenSize {
		t.Errorf("head dim %d × heads %d != hidden %d", m.Model.HeadDim, m.Model.AttentionHeads, m.Model.HiddenSize)
	}
	if m.Runtime.Kind != "ollama" || m.Runtime.ModelPath != modelPath || m.Requirements.Accelerator != "" {
		t.Errorf("runtime/requirements: %+v %+v", m.Runtime, m.Requirements)
	}
}

func TestReadHeaderRejects(t *testing.T) {
	good := write(t)
	cases := map[string]struct {
		data []byte
		want string
	}{
		"empty":     {nil, "magic at byte 0: file ends early"},
		"magic":     {append([]byte("GGUX"), good[4:]...), `magic: "GGUX"`},
		"version":   {append(append([]byte("GGUF"), 2, 0, 0, 0), good[8:]...), "version: 2"},
		"truncated": {good[:200], "file ends early"},
		"huge count": {append(append([]byte("GGUF"), 3, 0, 0, 0),
			0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0), "exceed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func FuzzReadHeader(f *testing.F) {
	good := write(f)
	f.Add(good[:2048])
	f.Add(good[:64])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bytes.NewReader(data))
		if err != nil {
			return
		}
		if h.DataOffset < 24 || uint64(h.DataOffset)%h.Alignment() != 0 {
			t.Fatalf("data offset %d with alignment %d", h.DataOffset, h.Alignment())
		}
	})
}
