package bundles

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/bundles/demomodel"
	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// ErrInput marks errors that the command line or the spec must fix before
// anything is fetched or signed: a required runtime artefact not supplied,
// an --artifact the spec does not name, model facts that preflight needs and
// nothing provides. Callers map it to a usage error.
var ErrInput = errors.New("bundle input")

// inputError keeps err's message and makes it match ErrInput too.
type inputError struct{ err error }

func (e inputError) Error() string   { return e.err.Error() }
func (e inputError) Unwrap() []error { return []error{e.err, ErrInput} }

// MissingFactsError names the model facts preflight sizes a host with that
// neither the spec nor the model's own files (config.json, the GGUF header)
// give. Without them the bundle would be refused on the isolated side, after
// it crossed the gap.
type MissingFactsError struct {
	Spec   string   // the spec's name
	Fields []string // e.g. "model.layers"
	Read   []string // the bundle files the facts were looked for in
	Errs   []error  // why some of them could not be read
}

func (e *MissingFactsError) Error() string {
	where := "no config.json or GGUF file among the model's sources"
	if len(e.Read) > 0 {
		where = "not in " + strings.Join(e.Read, ", ") + " either"
	}
	msg := fmt.Sprintf("spec %s lacks the model facts preflight needs: %s (%s)", e.Spec, strings.Join(e.Fields, ", "), where)
	for _, err := range e.Errs {
		msg += "; " + err.Error()
	}
	return msg
}

// missingFacts lists what preflight's sizing would refuse m for, the way
// provision/preflight reads a manifest: layers, attention and KV heads, a
// head dimension (or hidden size to derive it), the maximum context and,
// when weights is set, the weights' size.
func missingFacts(m manifests.Model, weights bool) []string {
	var miss []string
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"model.layers", int64(m.Layers)}, {"model.attentionHeads", int64(m.AttentionHeads)},
		{"model.kvHeads", int64(m.KVHeads)}, {"model.maxContext", int64(m.MaxContext)},
	} {
		if f.v <= 0 {
			miss = append(miss, f.name)
		}
	}
	if m.HeadDim <= 0 && (m.HiddenSize <= 0 || m.AttentionHeads <= 0) {
		miss = append(miss, "model.headDim (or model.hiddenSize)")
	}
	if weights && m.WeightsBytes <= 0 {
		miss = append(miss, "model.weightsBytes")
	}
	if m.AttentionHeads > 0 && m.KVHeads > 0 && m.AttentionHeads%m.KVHeads != 0 {
		miss = append(miss, fmt.Sprintf("model.kvHeads (%d does not divide model.attentionHeads %d)", m.KVHeads, m.AttentionHeads))
	}
	return miss
}

// mayProvideFacts reports whether one of spec's model sources can bring a
// config.json or a GGUF file to read facts from once fetched.
func mayProvideFacts(spec *specs.Spec) bool {
	for _, src := range spec.Model.Sources {
		switch specs.SourceKind(src.URL) {
		case specs.KindHF:
			if included("config.json", src.Include) {
				return true
			}
		case specs.KindGenerated:
		case specs.KindGetter:
			return true // a git checkout or an archive: its files are known once fetched
		default:
			if path.Base(src.Dest) == "config.json" || strings.HasSuffix(src.Dest, ".gguf") || strings.HasSuffix(src.Dest, "/") {
				return true
			}
		}
	}
	return false
}

// factsFromConfig reads the facts a Hugging Face config.json holds.
// Missing keys leave fields zero; keys of the wrong type are errors.
func factsFromConfig(data []byte) (manifests.Model, error) {
	var c struct {
		ModelType string `json:"model_type"`
		Layers    int    `json:"num_hidden_layers"`
		Heads     int    `json:"num_attention_heads"`
		KVHeads   int    `json:"num_key_value_heads"`
		Hidden    int    `json:"hidden_size"`
		HeadDim   int    `json:"head_dim"`
		MaxPos    int    `json:"max_position_embeddings"`
		Dtype     string `json:"torch_dtype"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return manifests.Model{}, err
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads // multi-head attention: as many KV heads as query heads
	}
	m := manifests.Model{
		Architecture: c.ModelType, Layers: max(c.Layers, 0), AttentionHeads: max(c.Heads, 0),
		KVHeads: max(c.KVHeads, 0), HiddenSize: max(c.Hidden, 0), HeadDim: max(c.HeadDim, 0),
		MaxContext: max(c.MaxPos, 0),
		Dtype:      map[string]string{"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[c.Dtype],
	}
	return m, nil
}

// factsFromGGUF reads the facts in a GGUF file's metadata.
func factsFromGGUF(r io.Reader) (manifests.Model, error) {
	h, err := demomodel.ReadHeader(r)
	if err != nil {
		return manifests.Model{}, err
	}
	m := manifests.Model{Format: "gguf"}
	if v, ok := h.Lookup("general.architecture"); ok {
		m.Architecture, _ = v.(string)
	}
	if m.Architecture == "" {
		return m, nil
	}
	num := func(key string) int {
		v, ok := h.Lookup(m.Architecture + "." + key)
		if !ok {
			return 0
		}
		var n int64
		switch x := v.(type) {
		case uint8:
			n = int64(x)
		case int8:
			n = int64(x)
		case uint16:
			n = int64(x)
		case int16:
			n = int64(x)
		case uint32:
			n = int64(x)
		case int32:
			n = int64(x)
		case uint64:
			if x > 1<<31 {
				return 0
			}
			n = int64(x)
		case int64:
			n = x
		}
		if n <= 0 || n > 1<<31 {
			return 0
		}
		return int(n)
	}
	m.Layers = num("block_count")
	m.AttentionHeads = num("attention.head_count")
	m.KVHeads = num("attention.head_count_kv")
	if m.KVHeads == 0 {
		m.KVHeads = m.AttentionHeads
	}
	m.HiddenSize = num("embedding_length")
	m.HeadDim = num("attention.key_length")
	m.MaxContext = num("context_length")
	return m, nil
}

// fillFacts completes meta.Model from the fetched model files where the spec
// left facts out (what the spec says wins), and returns the files it read
// and the errors of those it could not. Files are only read when facts are
// missing, so a spec that states them all never depends on parsing the
// model. The weights' size, when not given, is the size of the model files
// under runtime.modelPath (all model files when there is none).
func fillFacts(items []*item, meta *manifests.Meta) (read []string, errs []error) {
	defer func() {
		if meta.Model.HeadDim == 0 && meta.Model.HiddenSize > 0 && meta.Model.AttentionHeads > 0 {
			meta.Model.HeadDim = meta.Model.HiddenSize / meta.Model.AttentionHeads
		}
		if meta.Model.WeightsBytes == 0 {
			meta.Model.WeightsBytes = modelBytes(items, meta.Runtime.ModelPath)
		}
	}()
	if len(missingFacts(meta.Model, false)) == 0 {
		return nil, nil
	}
	for _, it := range items {
		if it.role != "model" {
			continue
		}
		files := []struct{ dest, file string }{{it.dest, it.part}}
		if it.kind == kindGit {
			files = files[:0]
			for _, tf := range it.tree {
				files = append(files, struct{ dest, file string }{it.dest + "/" + tf.rel, filepath.Join(it.part, filepath.FromSlash(tf.rel))})
			}
		}
		for _, f := range files {
			var found manifests.Model
			var err error
			switch {
			case path.Base(f.dest) == "config.json":
				var data []byte
				if data, err = os.ReadFile(f.file); err == nil {
					found, err = factsFromConfig(data)
				}
			case strings.HasSuffix(f.dest, ".gguf"):
				var fh *os.File
				if fh, err = os.Open(f.file); err == nil {
					found, err = factsFromGGUF(fh)
					fh.Close()
				}
			default:
				continue
			}
			read = append(read, f.dest)
			if err != nil {
				errs = append(errs, fmt.Errorf("read model facts from %s: %w", f.dest, err))
				continue
			}
			meta.Model = overlay(found, meta.Model)
		}
	}
	return read, errs
}

// modelBytes sums the fetched model files under modelPath (every model file
// when modelPath is empty).
func modelBytes(items []*item, modelPath string) int64 {
	p := strings.Trim(modelPath, "/")
	under := func(dest string) bool { return p == "" || dest == p || strings.HasPrefix(dest, p+"/") }
	var n int64
	for _, it := range items {
		if it.role != "model" {
			continue
		}
		if it.kind == kindGit {
			for _, tf := range it.tree {
				if under(it.dest + "/" + tf.rel) {
					n += tf.digest.Size
				}
			}
			continue
		}
		if under(it.dest) {
			n += it.digest.Size
		}
	}
	return n
}
