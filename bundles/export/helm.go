package export

import (
	"context"
	"debug/buildinfo"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

//go:embed all:chart
var chartFS embed.FS

// ChartName is the name of the chart export writes.
const ChartName = "qwen-appliance"

// Options say what to export and where.
type Options struct {
	Bundle   string             // signed bundle directory
	Verifier manifests.Verifier // keys (and threshold) the bundle must be signed by
	Out      string             // chart directory to create; it must not exist
	// Images is the OCI layout directory; Out/images (left out of the
	// chart by its .helmignore) when empty.
	Images string
	// RuntimeImage is the vLLM image, REF@sha256:HEX.
	RuntimeImage string
	// Binary is the qwen-appliance executable the gateway image carries
	// (the lean 'make appliance' build is the one to ship).
	Binary string
	// Registry prefixes the names of the images export builds.
	Registry string
	// Plan is a 'preflight --json' report from a node like the cluster's
	// GPU nodes; its tensor-parallel degree and context go into the chart.
	Plan []byte
	// PlanName names Plan in messages.
	PlanName string
	// TensorParallel, when positive, overrides the plan's degree.
	TensorParallel int
	// Values are YAML files merged, in order, over the chart's defaults.
	Values []ValuesFile
	Log    func(format string, args ...any) // progress lines; nil for none
}

// ValuesFile is one --values file.
type ValuesFile struct {
	Name string
	Data []byte
}

// Result is what Helm wrote.
type Result struct {
	Chart          string   `json:"chart"`
	Layout         string   `json:"layout"`
	Bundle         string   `json:"bundle"`
	Version        uint64   `json:"version"`
	ManifestSHA256 string   `json:"manifestSha256"`
	KeyIDs         []string `json:"keyIds"`
	Images         []Image  `json:"images"`
	RuntimeImage   string   `json:"runtimeImage"`
	TensorParallel int      `json:"tensorParallel"`
	TPSource       string   `json:"tensorParallelFrom"`
	Arch           string   `json:"arch"`
}

// DefaultRegistry names the images when Options.Registry is empty.
const DefaultRegistry = "qwen-appliance.local"

// ErrOption is matched by errors in Options (a reference not pinned by
// digest, an output that exists, a plan for another bundle).
var ErrOption = errors.New("invalid export option")

var (
	digestRef = regexp.MustCompile(`^[a-z0-9][a-z0-9._\-/:]*[a-z0-9](:[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})?@sha256:[0-9a-f]{64}$`)
	registry  = regexp.MustCompile(`^[a-z0-9]([a-z0-9.\-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._\-]*[a-z0-9])?)*$`)
)

// CheckDigestRef checks that ref names an image by digest, NAME@sha256:HEX,
// so that what runs is exactly what was reviewed; tags alone can move.
func CheckDigestRef(ref string) error {
	if !digestRef.MatchString(ref) {
		return fmt.Errorf("%w: image %q is not pinned by digest (want NAME@sha256:<64 hex digits>)", ErrOption, ref)
	}
	return nil
}

// Helm verifies the bundle (signature, then every byte), builds the model
// and gateway images into an OCI layout and writes the chart. Nothing is
// left at Out when it fails. Errors matching manifests.ErrVerification mean
// the bundle was refused; ErrOption a bad option; *ValuesError a values
// file the chart's schema refuses.
func Helm(ctx context.Context, o Options) (*Result, error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := CheckDigestRef(o.RuntimeImage); err != nil {
		return nil, err
	}
	reg := o.Registry
	if reg == "" {
		reg = DefaultRegistry
	}
	if !registry.MatchString(reg) {
		return nil, fmt.Errorf("%w: registry %q is not HOST[:PORT][/PATH] in lower case", ErrOption, reg)
	}
	if _, err := os.Lstat(o.Out); err == nil {
		return nil, fmt.Errorf("%w: %s already exists; export writes a new chart directory", ErrOption, o.Out)
	}

	signed, sig, err := verifyBundle(ctx, o.Bundle, o.Verifier)
	if err != nil {
		return nil, err
	}
	m := signed.Manifest
	logf("verified %s version %d: signature by %s, %d files", m.Name, m.Version, strings.Join(signed.KeyIDs, ", "), len(m.Files))
	if m.Runtime.ModelPath == "" {
		return nil, fmt.Errorf("%w: %s version %d: the manifest names no runtime.modelPath, so the chart cannot point vLLM at the model", ErrOption, m.Name, m.Version)
	}

	tp, tpFrom, maxLen, err := tensorParallel(o, m)
	if err != nil {
		return nil, err
	}

	facts, err := readBinary(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOption, err)
	}
	if !leanBuild(o.Binary) {
		logf("warning: %s is not the lean appliance build ('make appliance'); the gateway image will carry the connected-side fetchers too", o.Binary)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(o.Out)), "."+filepath.Base(o.Out)+".export-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()

	logf("building the gateway image from %s (%s, %d libraries)", o.Binary, facts.Arch, len(facts.Libs))
	gw, err := gatewayImage(o.Binary, facts, m.Created)
	if err != nil {
		return nil, err
	}
	logf("building the model image from %s (%d layers)", o.Bundle, len(m.Files)+1)
	model, err := modelImage(o.Bundle, signed, sig, facts.Arch)
	if err != nil {
		return nil, err
	}
	refs := map[string]string{
		"gateway": fmt.Sprintf("%s/qwen-appliance/gateway:%s", reg, imageTag(m)),
		"model":   fmt.Sprintf("%s/qwen-appliance/bundle-%s:v%d", reg, m.Name, m.Version),
	}
	layoutDir := filepath.Join(tmp, "images")
	if o.Images != "" {
		layoutDir = o.Images
		if _, err := os.Lstat(layoutDir); err == nil {
			return nil, fmt.Errorf("%w: %s already exists; export writes a new OCI layout", ErrOption, layoutDir)
		}
		defer func() {
			if !done {
				os.RemoveAll(layoutDir)
			}
		}()
	}
	images, err := writeImages(layoutDir, map[string]v1.Image{"gateway": gw, "model": model}, refs)
	if err != nil {
		return nil, err
	}
	pinned := map[string]string{}
	for _, im := range images {
		pinned[im.Role] = im.Pinned()
	}

	var keys []trustKey
	for _, k := range o.Verifier.Trusted {
		keys = append(keys, trustKey{ID: k.ID, Key: strings.TrimSpace(string(k.MarshalText()))})
	}
	threshold := max(o.Verifier.Threshold, 1)
	served := m.Runtime.ServedModelName
	if served == "" {
		served = m.Name
	}
	facts2 := valuesFacts{
		Name: m.Name, Version: m.Version, ManifestSHA256: sha256Hex(signed.Raw),
		ModelPath: m.Runtime.ModelPath, ServedModelName: served,
		GatewayImage: pinned["gateway"], ModelImage: pinned["model"], RuntimeImage: o.RuntimeImage,
		TensorParallel: tp, TPSource: tpFrom, MaxModelLen: maxLen,
		GPUMemoryUtilization: m.Runtime.GPUMemoryUtilization, Dtype: vllmDtype(m.Model.Dtype),
		TrustKeys: keys, Threshold: threshold,
	}
	over := map[string][]byte{}
	var order []string
	for _, v := range o.Values {
		over[v.Name] = v.Data
		order = append(order, v.Name)
	}
	values, err := renderValues(facts2, over, order)
	if err != nil {
		return nil, err
	}
	if err := writeChart(tmp, m, values); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // a chart holds no secret
		return nil, err
	}
	if err := os.Rename(tmp, o.Out); err != nil {
		return nil, fmt.Errorf("write chart: %w", err)
	}
	done = true
	if o.Images == "" {
		layoutDir = filepath.Join(o.Out, "images")
	}
	return &Result{
		Chart: o.Out, Layout: layoutDir, Bundle: m.Name, Version: m.Version, ManifestSHA256: facts2.ManifestSHA256,
		KeyIDs: signed.KeyIDs, Images: images, RuntimeImage: o.RuntimeImage, TensorParallel: tp, TPSource: tpFrom, Arch: facts.Arch,
	}, nil
}

// leanBuild reports whether bin is a Go binary built with the appliance
// tag, the build meant for the isolated side.
func leanBuild(bin string) bool {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-tags" && slices.Contains(strings.Split(s.Value, ","), "appliance") {
			return true
		}
	}
	return false
}

// verifyBundle checks the signature and then every file of the bundle, and
// returns the signature file's bytes for the model image.
func verifyBundle(ctx context.Context, dir string, v manifests.Verifier) (*manifests.Signed, []byte, error) {
	signed, err := v.Open(dir)
	if err != nil {
		return nil, nil, err
	}
	if err := manifests.CheckFiles(ctx, dir, signed.Manifest, manifests.CheckOptions{}); err != nil {
		return nil, nil, err
	}
	sig, err := manifests.ReadFile(dir, manifests.SignatureFile)
	if err != nil {
		return nil, nil, err
	}
	return signed, sig, nil
}

// tensorParallel decides the GPUs per replica and the context: the option,
// else the plan, else one GPU and the manifest's default context.
func tensorParallel(o Options, m *manifests.Manifest) (tp int, from string, maxLen int, err error) {
	maxLen = m.Runtime.DefaultContext
	if len(o.Plan) > 0 {
		p, err := ParsePlan(o.Plan)
		if err != nil {
			return 0, "", 0, fmt.Errorf("%w: --plan %s: %v", ErrOption, o.PlanName, err)
		}
		if p.Bundle != m.Name || p.Version != m.Version {
			return 0, "", 0, fmt.Errorf("%w: --plan %s is for %s version %d, the bundle is %s version %d", ErrOption, o.PlanName, p.Bundle, p.Version, m.Name, m.Version)
		}
		tp, from, maxLen = p.TensorParallel, "from the preflight plan "+path.Base(filepath.ToSlash(o.PlanName)), p.Context
	}
	if o.TensorParallel > 0 {
		tp, from = o.TensorParallel, "set with --tensor-parallel"
	}
	if tp == 0 {
		tp, from = 1, "one GPU: no preflight plan was given"
	}
	return tp, from, maxLen, nil
}

// writeChart writes Chart.yaml, values.yaml and the static files.
func writeChart(dir string, m *manifests.Manifest, values []byte) error {
	chart := fmt.Sprintf(`apiVersion: v2
name: %s
description: %s version %d served by vLLM behind the qwen-appliance gateway, verified against its signed manifest at every start
type: application
version: %d.0.0
appVersion: %q
# Image volumes (the model arrives as a read-only OCI image).
kubeVersion: ">=1.33.0-0"
annotations:
  qwen-appliance.io/bundle: %s
  qwen-appliance.io/bundle-version: "%d"
`, ChartName, m.Name, m.Version, m.Version, fmt.Sprintf("%s-v%d", m.Name, m.Version), m.Name, m.Version)
	if err := os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte(chart), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "values.yaml"), values, 0o644); err != nil {
		return err
	}
	return fs.WalkDir(chartFS, "chart", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, "chart"), "/")
		if rel == "" {
			return nil
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := chartFS.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
}

// imageTag is the gateway image's tag: the bundle it was exported for, and
// the time of its manifest, so two exports never share a tag with
// different bytes unnoticed (the digest pins it anyway).
func imageTag(m *manifests.Manifest) string {
	return fmt.Sprintf("%s-v%d-%s", m.Name, m.Version, m.Created.UTC().Format("20060102T150405Z"))
}

// vllmDtype maps a manifest dtype to vLLM's --dtype, as the single-host
// runtime does; quantized weights carry their own and take "auto".
func vllmDtype(d string) string {
	switch d {
	case "bf16":
		return "bfloat16"
	case "f16", "fp16":
		return "float16"
	case "f32", "fp32":
		return "float32"
	}
	return "auto"
}
