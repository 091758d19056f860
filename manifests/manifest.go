package manifests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
	"regexp"
	"strconv"
	"time"
)

// SchemaVersion is the manifest schema this package writes and reads.
const SchemaVersion = 2

// File names of a signed manifest inside a bundle directory.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.sig"
)

// DefaultChunkSize is the chunk size used when none is given: small enough to
// name a corrupt range precisely and to spread one large file over all cores.
const DefaultChunkSize = 16 << 20

// Manifest pins every byte of a bundle. Its canonical encoding (Marshal) is
// what gets signed.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	Name          string       `json:"name"`
	Version       uint64       `json:"version"`
	Created       time.Time    `json:"created"`
	Expires       time.Time    `json:"expires"`
	Model         Model        `json:"model"`
	Requirements  Requirements `json:"requirements"`
	Runtime       Runtime      `json:"runtime"`
	Provenance    Provenance   `json:"provenance"`
	Files         []File       `json:"files"`
}

// Model holds the facts about the model that sizing and serving need.
type Model struct {
	Name           string `json:"name"`                     // e.g. Qwen/Qwen2.5-7B-Instruct
	Architecture   string `json:"architecture,omitempty"`   // e.g. qwen2
	Format         string `json:"format,omitempty"`         // safetensors | gguf
	Parameters     int64  `json:"parameters,omitempty"`     // parameter count
	Layers         int    `json:"layers,omitempty"`         // transformer blocks
	AttentionHeads int    `json:"attentionHeads,omitempty"` // query heads
	KVHeads        int    `json:"kvHeads,omitempty"`        // key/value heads (GQA)
	HeadDim        int    `json:"headDim,omitempty"`        // dimension of one head
	HiddenSize     int    `json:"hiddenSize,omitempty"`     // embedding width
	Dtype          string `json:"dtype,omitempty"`          // weight type: bf16, f16, f32, q4_k_m, awq-int4
	KVCacheDtype   string `json:"kvCacheDtype,omitempty"`   // KV cache element type, e.g. bf16, fp8
	MaxContext     int    `json:"maxContext,omitempty"`     // longest context the model supports, in tokens
	WeightsBytes   int64  `json:"weightsBytes,omitempty"`   // bytes of weights loaded onto the devices
	License        string `json:"license,omitempty"`        // SPDX identifier or name
}

// Requirements are what the host must offer to run the bundle.
type Requirements struct {
	Accelerator          string   `json:"accelerator,omitempty"`          // "nvidia", or "" for CPU-capable bundles
	MinComputeCapability string   `json:"minComputeCapability,omitempty"` // e.g. "8.0"
	MinDriverVersion     string   `json:"minDriverVersion,omitempty"`     // e.g. "535.104.05"
	MinVRAMBytes         int64    `json:"minVRAMBytes,omitempty"`         // over all GPUs used
	MinContext           int      `json:"minContext,omitempty"`           // smallest context worth serving
	MinRAMBytes          int64    `json:"minRAMBytes,omitempty"`
	MinDiskBytes         int64    `json:"minDiskBytes,omitempty"`
	CPUFeatures          []string `json:"cpuFeatures,omitempty"` // e.g. avx2
}

// Runtime describes the inference server the bundle carries.
type Runtime struct {
	Kind                 string   `json:"kind,omitempty"`    // vllm | llama.cpp | ollama
	Version              string   `json:"version,omitempty"` // the server's own version
	Devices              []string `json:"devices,omitempty"` // where it can run: cuda, cpu
	Entrypoint           string   `json:"entrypoint,omitempty"`
	ModelPath            string   `json:"modelPath,omitempty"` // bundle-relative path of the model (file or directory)
	ServedModelName      string   `json:"servedModelName,omitempty"`
	DefaultContext       int      `json:"defaultContext,omitempty"`
	GPUMemoryUtilization float64  `json:"gpuMemoryUtilization,omitempty"` // share of each GPU's memory the runtime may take
	OverheadBytes        int64    `json:"overheadBytes,omitempty"`        // per-GPU runtime overhead (CUDA context, activations)
}

// Provenance says where the bytes came from.
type Provenance struct {
	Source   string `json:"source,omitempty"`   // e.g. hf://Qwen/Qwen2.5-7B-Instruct
	Revision string `json:"revision,omitempty"` // pinned commit
	Tool     string `json:"tool,omitempty"`     // qwen-appliance version that wrote the manifest
}

// File pins one regular file of the bundle.
type File struct {
	Path      string `json:"path"` // slash-separated, relative to the bundle root
	Size      int64  `json:"size"`
	Mode      string `json:"mode"` // permission bits in octal, e.g. "0644"
	SHA256    string `json:"sha256"`
	ChunkSize int64  `json:"chunkSize"`
	// Chunks proves each ChunkSize-long piece (the last one shorter) on its
	// own: SHA-256's chaining value after the file's first i+1 chunks, and
	// for the last chunk the file's SHA-256 (see FileHasher).
	Chunks []string `json:"chunks"`
}

// ChunkRange returns the byte range [off, off+n) that chunk i of f covers.
func (f File) ChunkRange(i int) (off, n int64) {
	off = int64(i) * f.ChunkSize
	n = min(f.ChunkSize, f.Size-off)
	return off, n
}

// chunkCount is how many chunks a file of size bytes has.
func chunkCount(size, chunkSize int64) int {
	if size == 0 {
		return 0
	}
	return int((size + chunkSize - 1) / chunkSize)
}

// Marshal returns the canonical encoding of m: the fields in schema order,
// two-space indentation, times in UTC to the second, files sorted by path,
// and a final newline. The same manifest always gives the same bytes.
func Marshal(m *Manifest) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// Parse decodes a manifest strictly: unknown fields, trailing data, invalid
// values and any encoding other than the canonical one are errors. Parse does
// not check signatures; use a Verifier for bytes from outside.
func Parse(data []byte) (*Manifest, error) {
	var m Manifest
	if err := jsonstrict.Decode(data, &m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	canon, err := Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if !bytes.Equal(canon, data) {
		return nil, fmt.Errorf("parse manifest: not in canonical form (re-encoded with other spacing, key order or duplicate keys)")
	}
	return &m, nil
}

var (
	hexDigest = regexp.MustCompile(`^[0-9a-f]{64}$`)
	octalMode = regexp.MustCompile(`^0[0-7]{3}$`)
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
)

// Validate checks every field of m and names the first one that is wrong.
func (m *Manifest) Validate() error {
	if m.SchemaVersion == 1 {
		return fmt.Errorf("schemaVersion: 1 is no longer read (its chunk hashes were independent SHA-256s; version 2 chunks are SHA-256 chaining values): create the bundle again with this version")
	}
	if m.SchemaVersion != SchemaVersion {
		return fmt.Errorf("schemaVersion: %d is not supported (want %d)", m.SchemaVersion, SchemaVersion)
	}
	if !nameRE.MatchString(m.Name) {
		return fmt.Errorf("name: %q must be 1-128 lower-case letters, digits, '.', '_' or '-'", m.Name)
	}
	if m.Version == 0 {
		return fmt.Errorf("version: must be at least 1")
	}
	for field, t := range map[string]time.Time{"created": m.Created, "expires": m.Expires} {
		if t.IsZero() || t.Location() != time.UTC || t.Nanosecond() != 0 {
			return fmt.Errorf("%s: must be a UTC time to the second", field)
		}
	}
	if !m.Expires.After(m.Created) {
		return fmt.Errorf("expires: %s is not after created %s", m.Expires.Format(time.RFC3339), m.Created.Format(time.RFC3339))
	}
	if u := m.Runtime.GPUMemoryUtilization; u < 0 || u > 1 {
		return fmt.Errorf("runtime.gpuMemoryUtilization: %v is not between 0 and 1", u)
	}
	seen := make(map[string]bool, len(m.Files))
	for i, f := range m.Files {
		where := fmt.Sprintf("files[%d]", i)
		if err := ValidatePath(f.Path); err != nil {
			return fmt.Errorf("%s.path: %w", where, err)
		}
		if seen[f.Path] {
			return fmt.Errorf("%s.path: %q is listed twice", where, f.Path)
		}
		seen[f.Path] = true
		if i > 0 && m.Files[i-1].Path > f.Path {
			return fmt.Errorf("%s.path: %q is out of order (files are sorted by path)", where, f.Path)
		}
		if f.Path == ManifestFile || f.Path == SignatureFile {
			return fmt.Errorf("%s.path: %q is reserved", where, f.Path)
		}
		if f.Size < 0 {
			return fmt.Errorf("%s.size: %d is negative", where, f.Size)
		}
		if !octalMode.MatchString(f.Mode) {
			return fmt.Errorf("%s.mode: %q is not permission bits in octal like \"0644\"", where, f.Mode)
		}
		if !hexDigest.MatchString(f.SHA256) {
			return fmt.Errorf("%s.sha256: not 64 lower-case hex digits", where)
		}
		if f.ChunkSize < 4096 || f.ChunkSize > 1<<32 || f.ChunkSize%4096 != 0 {
			return fmt.Errorf("%s.chunkSize: %d is not a multiple of 4096 between 4 KiB and 4 GiB", where, f.ChunkSize)
		}
		if want := chunkCount(f.Size, f.ChunkSize); len(f.Chunks) != want {
			return fmt.Errorf("%s.chunks: %d listed, a %d-byte file in %d-byte chunks has %d", where, len(f.Chunks), f.Size, f.ChunkSize, want)
		}
		for j, c := range f.Chunks {
			if !hexDigest.MatchString(c) {
				return fmt.Errorf("%s.chunks[%d]: not 64 lower-case hex digits", where, j)
			}
		}
		if n := len(f.Chunks); n > 0 && f.Chunks[n-1] != f.SHA256 {
			return fmt.Errorf("%s.chunks[%d]: the last chunk's proof must be the file's sha256", where, n-1)
		}
	}
	return nil
}

// FileMode returns the permission bits recorded for f.
func (f File) FileMode() uint32 {
	v, _ := strconv.ParseUint(f.Mode, 8, 32)
	return uint32(v)
}

// TotalSize is the sum of all file sizes.
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// Lookup returns the file entry for a bundle-relative path.
func (m *Manifest) Lookup(path string) (File, bool) {
	for _, f := range m.Files {
		if f.Path == path {
			return f, true
		}
	}
	return File{}, false
}
