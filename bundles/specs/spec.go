// Package specs reads bundle specs: YAML that names a model's sources, the
// runtime's artefacts with their SHA-256 pins, the model facts, serving
// defaults and host requirements. The specs the project supports are the
// YAML files of this directory, built into the binary.
//
// It must never accept a spec it cannot place: every error names the file,
// line, column and field, and unknown fields are errors, not ignored.
package specs

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Spec says what goes into a bundle: where the model and the runtime come
// from, what they must hash to, and the facts and defaults the host side
// needs. Specs are YAML; Parse reads them.
type Spec struct {
	Name         string       `yaml:"name"`
	Version      uint64       `yaml:"version"`
	Description  string       `yaml:"description"`
	Model        ModelSpec    `yaml:"model"`
	Runtime      RuntimeSpec  `yaml:"runtime"`
	Serving      ServingSpec  `yaml:"serving"`
	Requirements Requirements `yaml:"requirements"`

	file string              // where the spec came from, for messages
	pos  map[string]position // field path → where it was written
}

// ModelSpec names the model's sources and its facts.
type ModelSpec struct {
	Name           string   `yaml:"name"`
	License        string   `yaml:"license"`
	Architecture   string   `yaml:"architecture"`
	Format         string   `yaml:"format"`
	Parameters     int64    `yaml:"parameters"`
	Layers         int      `yaml:"layers"`
	AttentionHeads int      `yaml:"attentionHeads"`
	KVHeads        int      `yaml:"kvHeads"`
	HeadDim        int      `yaml:"headDim"`
	HiddenSize     int      `yaml:"hiddenSize"`
	Dtype          string   `yaml:"dtype"`
	KVCacheDtype   string   `yaml:"kvCacheDtype"`
	MaxContext     int      `yaml:"maxContext"`
	WeightsBytes   Size     `yaml:"weightsBytes"`
	Sources        []Source `yaml:"sources"`
}

// Source is one place model files come from.
//
//   - hf://ORG/REPO@COMMIT: a Hugging Face repository at a pinned commit;
//     Include globs (path.Match over the repository path) choose the files,
//     Files optionally pins SHA-256s on top of what the hub advertises.
//   - http://, https://, file://: one file, pinned by SHA256.
//   - generated://NAME: a file the project generates (the demo model).
//   - any other go-getter address (s3::, gcs::, git::, …): one file pinned
//     by SHA256, or a git repository pinned by a 40-hex ?ref=.
type Source struct {
	URL     string            `yaml:"url"`
	Include []string          `yaml:"include"`
	Files   map[string]string `yaml:"files"`
	SHA256  string            `yaml:"sha256"`
	Dest    string            `yaml:"dest"`
}

// RuntimeSpec describes the inference server and the artefacts it needs.
type RuntimeSpec struct {
	Kind       string     `yaml:"kind"`
	Version    string     `yaml:"version"`
	Devices    []string   `yaml:"devices"`
	Entrypoint string     `yaml:"entrypoint"`
	Artifacts  []Artifact `yaml:"artifacts"`
}

// Artifact is one file of the runtime. An empty URL or SHA256 must be
// supplied when bundling (--artifact NAME=URL#sha256=HEX), unless Optional
// (skipped when no URL is given) or unpinned downloads are allowed.
type Artifact struct {
	Name     string `yaml:"name"`
	URL      string `yaml:"url"`
	SHA256   string `yaml:"sha256"`
	Dest     string `yaml:"dest"`
	Mode     string `yaml:"mode"`
	Optional bool   `yaml:"optional"`
	License  string `yaml:"license"`
}

// ServingSpec holds the serving defaults written into the manifest.
type ServingSpec struct {
	ModelPath            string  `yaml:"modelPath"`
	ServedModelName      string  `yaml:"servedModelName"`
	DefaultContext       int     `yaml:"defaultContext"`
	GPUMemoryUtilization float64 `yaml:"gpuMemoryUtilization"`
	OverheadBytes        Size    `yaml:"overheadBytes"`
}

// Requirements are what the host must offer, as written in a spec.
type Requirements struct {
	Accelerator          string   `yaml:"accelerator"`
	MinComputeCapability string   `yaml:"minComputeCapability"`
	MinDriverVersion     string   `yaml:"minDriverVersion"`
	MinVRAM              Size     `yaml:"minVRAM"`
	MinContext           int      `yaml:"minContext"`
	MinRAM               Size     `yaml:"minRAM"`
	MinDisk              Size     `yaml:"minDisk"`
	CPUFeatures          []string `yaml:"cpuFeatures"`
}

// Size is a byte count written as a number or with a K/M/G/T suffix.
type Size int64

// Source kinds.
const (
	KindHF        = "hf"
	KindHTTP      = "http"
	KindFile      = "file"
	KindGenerated = "generated"
	KindGetter    = "go-getter"
)

var (
	hexRE      = regexp.MustCompile(`^[0-9a-f]{64}$`)
	commitRE   = regexp.MustCompile(`^[0-9a-f]{40}$`)
	specNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	hfRepoRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$`)
	modeRE     = regexp.MustCompile(`^0[0-7]{3}$`)
)

// SourceKind classifies a source address.
func SourceKind(url string) string {
	switch {
	case strings.HasPrefix(url, "hf://"):
		return KindHF
	case strings.HasPrefix(url, "http://"), strings.HasPrefix(url, "https://"):
		return KindHTTP
	case strings.HasPrefix(url, "file://"):
		return KindFile
	case strings.HasPrefix(url, "generated://"):
		return KindGenerated
	default:
		return KindGetter
	}
}

// ParseHF splits hf://ORG/REPO@REVISION.
func ParseHF(url string) (repo, rev string, err error) {
	rest, ok := strings.CutPrefix(url, "hf://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an hf:// address", url)
	}
	repo, rev, _ = strings.Cut(rest, "@")
	if !hfRepoRE.MatchString(repo) || strings.Contains(repo, "..") {
		return "", "", fmt.Errorf("%q: want hf://ORG/REPO@REVISION", url)
	}
	if rev == "" || strings.ContainsAny(rev, "/?#% ") {
		return "", "", fmt.Errorf("%q: want hf://ORG/REPO@REVISION with a revision (a 40-hex commit)", url)
	}
	return repo, rev, nil
}

// validate checks the spec's fields and names the first wrong one with its
// line and column.
func (s *Spec) validate() error {
	if !specNameRE.MatchString(s.Name) {
		return s.Errorf("name", "%q must be 1-128 lower-case letters, digits, '.', '_' or '-'", s.Name)
	}
	if s.Version == 0 {
		return s.Errorf("version", "must be at least 1")
	}
	if strings.TrimSpace(s.Model.Name) == "" {
		return s.Errorf("model.name", "missing")
	}
	if len(s.Model.Sources) == 0 {
		return s.Errorf("model.sources", "at least one source is needed")
	}
	dests := map[string]string{}
	claim := func(field, dest string) error {
		if err := manifests.ValidatePath(dest); err != nil {
			return s.Errorf(field, "%q: %v", dest, err)
		}
		if dest == manifests.ManifestFile || dest == manifests.SignatureFile || dest == sbomFile {
			return s.Errorf(field, "%q is reserved", dest)
		}
		if other, ok := dests[dest]; ok {
			return s.Errorf(field, "%q is also the destination of %s", dest, other)
		}
		dests[dest] = field
		return nil
	}
	for i, src := range s.Model.Sources {
		f := fmt.Sprintf("model.sources[%d]", i)
		switch SourceKind(src.URL) {
		case KindHF:
			if _, _, err := ParseHF(src.URL); err != nil {
				return s.Errorf(f+".url", "%v", err)
			}
			if src.SHA256 != "" {
				return s.Errorf(f+".sha256", "hf:// sources are pinned by commit; pin single files under files:")
			}
			for j, g := range src.Include {
				if _, err := path.Match(g, ""); err != nil {
					return s.Errorf(fmt.Sprintf("%s.include[%d]", f, j), "%q is not a valid glob", g)
				}
			}
			for p, sum := range src.Files {
				if !hexRE.MatchString(sum) {
					return s.Errorf(f+".files."+p, "not 64 lower-case hex digits")
				}
			}
			dir := strings.TrimSuffix(src.Dest, "/")
			if dir == "" {
				dir = "model"
			}
			if err := manifests.ValidatePath(dir); err != nil {
				return s.Errorf(f+".dest", "%q: %v", src.Dest, err)
			}
		default:
			if src.URL == "" {
				return s.Errorf(f+".url", "missing")
			}
			if len(src.Include) > 0 || len(src.Files) > 0 {
				return s.Errorf(f+".include", "include and files apply to hf:// sources only")
			}
			if src.SHA256 != "" && !hexRE.MatchString(src.SHA256) {
				return s.Errorf(f+".sha256", "not 64 lower-case hex digits")
			}
			if src.Dest == "" {
				return s.Errorf(f+".dest", "missing (the bundle path of the file, e.g. model/x.gguf)")
			}
			if err := claim(f+".dest", src.Dest); err != nil {
				return err
			}
		}
	}
	for i, a := range s.Runtime.Artifacts {
		f := fmt.Sprintf("runtime.artifacts[%d]", i)
		if !specNameRE.MatchString(a.Name) {
			return s.Errorf(f+".name", "%q must be 1-128 lower-case letters, digits, '.', '_' or '-'", a.Name)
		}
		for j := range i {
			if s.Runtime.Artifacts[j].Name == a.Name {
				return s.Errorf(f+".name", "%q is used twice", a.Name)
			}
		}
		if a.SHA256 != "" && !hexRE.MatchString(a.SHA256) {
			return s.Errorf(f+".sha256", "not 64 hex digits")
		}
		if a.Mode != "" && !modeRE.MatchString(a.Mode) {
			return s.Errorf(f+".mode", "%q is not permission bits in octal like \"0755\"", a.Mode)
		}
		if a.Dest == "" {
			return s.Errorf(f+".dest", "missing (the bundle path, e.g. runtime/llama-server)")
		}
		if err := claim(f+".dest", a.Dest); err != nil {
			return err
		}
	}
	if u := s.Serving.GPUMemoryUtilization; u < 0 || u > 1 {
		return s.Errorf("serving.gpuMemoryUtilization", "%v is not between 0 and 1", u)
	}
	return nil
}

// Errorf formats "FILE:LINE:COL: FIELD: message" for field (a dotted path).
func (s *Spec) Errorf(field, format string, args ...any) error {
	return &Error{File: s.file, Pos: s.lookup(field), Field: field, Msg: fmt.Sprintf(format, args...)}
}

// lookup finds where field, or its nearest written parent, appears.
func (s *Spec) lookup(field string) position {
	for f := field; f != ""; {
		if p, ok := s.pos[f]; ok {
			return p
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return position{}
}

// Meta returns the manifest's descriptive part as the spec gives it.
func (s *Spec) Meta() manifests.Meta {
	m := s.Model
	return manifests.Meta{
		Model: manifests.Model{
			Name: m.Name, Architecture: m.Architecture, Format: m.Format, Parameters: m.Parameters,
			Layers: m.Layers, AttentionHeads: m.AttentionHeads, KVHeads: m.KVHeads, HeadDim: m.HeadDim,
			HiddenSize: m.HiddenSize, Dtype: m.Dtype, KVCacheDtype: m.KVCacheDtype, MaxContext: m.MaxContext,
			WeightsBytes: int64(m.WeightsBytes), License: m.License,
		},
		Requirements: manifests.Requirements{
			Accelerator: s.Requirements.Accelerator, MinComputeCapability: s.Requirements.MinComputeCapability,
			MinDriverVersion: s.Requirements.MinDriverVersion, MinVRAMBytes: int64(s.Requirements.MinVRAM),
			MinContext: s.Requirements.MinContext, MinRAMBytes: int64(s.Requirements.MinRAM),
			MinDiskBytes: int64(s.Requirements.MinDisk), CPUFeatures: s.Requirements.CPUFeatures,
		},
		Runtime: manifests.Runtime{
			Kind: s.Runtime.Kind, Version: s.Runtime.Version, Devices: s.Runtime.Devices,
			Entrypoint: s.Runtime.Entrypoint, ModelPath: s.Serving.ModelPath,
			ServedModelName: s.Serving.ServedModelName, DefaultContext: s.Serving.DefaultContext,
			GPUMemoryUtilization: s.Serving.GPUMemoryUtilization, OverheadBytes: int64(s.Serving.OverheadBytes),
		},
	}
}

// sbomFile is the bundle's bill of materials (bundles.SBOMFile), reserved.
const sbomFile = "sbom.cdx.json"
