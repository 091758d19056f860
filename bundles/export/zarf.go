package export

import (
	"archive/tar"
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// zarfSchema is Zarf's own v1alpha1 schema for zarf.yaml (Apache-2.0, see
// zarfschema/LICENSE and SOURCE.md).
//
//go:embed zarfschema/zarf-v1alpha1-schema.json
var zarfSchema []byte

// ZarfOptions are Options plus where Zarf deploys.
type ZarfOptions struct {
	Options          // Out is the package directory
	Namespace string // namespace of the chart
}

// ZarfResult is what Zarf wrote.
type ZarfResult struct {
	Result
	Package  string `json:"package"`
	ZarfYAML string `json:"zarfYaml"`
	Archive  string `json:"imageArchive"`
}

// Zarf package layout inside ZarfOptions.Out.
const (
	ZarfChartDir = "chart"
	ZarfArchive  = "images.tar"
	ZarfFile     = "zarf.yaml"
)

var zarfName = regexp.MustCompile(`[^a-z0-9-]+`)

// Zarf writes a Zarf package directory: the chart (as Helm writes it), the
// OCI layout as one archive, and zarf.yaml naming both and the runtime
// image by digest, checked against Zarf's schema before it is written.
// Nothing is left at Out when it fails.
func Zarf(ctx context.Context, o ZarfOptions) (*ZarfResult, error) {
	out := o.Out
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("%w: %s already exists; export writes a new package directory", ErrOption, out)
	}
	if o.Namespace == "" {
		o.Namespace = "qwen-appliance"
	}
	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), "."+filepath.Base(out)+".zarf-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	ho := o.Options
	ho.Out = filepath.Join(tmp, ZarfChartDir)
	ho.Images = filepath.Join(tmp, "layout")
	res, err := Helm(ctx, ho)
	if err != nil {
		return nil, err
	}
	if err := tarDir(ho.Images, filepath.Join(tmp, ZarfArchive)); err != nil {
		return nil, fmt.Errorf("archive the OCI layout: %w", err)
	}
	if err := os.RemoveAll(ho.Images); err != nil {
		return nil, err
	}
	doc := zarfPackage(res, o.Namespace)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	if err := CheckZarf(data); err != nil {
		return nil, fmt.Errorf("zarf.yaml: %w", err)
	}
	header := fmt.Sprintf("# Written by 'qwen-appliance export zarf' from %s version %d.\n# Make the package with: zarf package create .\n", res.Bundle, res.Version)
	if err := os.WriteFile(filepath.Join(tmp, ZarfFile), append([]byte(header), data...), 0o644); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return nil, err
	}
	done = true
	res.Chart = filepath.Join(out, ZarfChartDir)
	res.Layout = filepath.Join(out, ZarfArchive)
	return &ZarfResult{Result: *res, Package: out, ZarfYAML: filepath.Join(out, ZarfFile), Archive: res.Layout}, nil
}

// zarfPackage is the zarf.yaml document. The built images come from the
// archive, named as its index annotates them; their digests are pinned in
// the chart's values (and repeated in the metadata's annotations). The
// runtime image is pulled by digest when the package is created.
func zarfPackage(r *Result, ns string) map[string]any {
	name := strings.Trim(zarfName.ReplaceAllString("qwen-appliance-"+r.Bundle, "-"), "-")
	ann := map[string]string{
		"qwen-appliance.io/bundle":          fmt.Sprintf("%s version %d", r.Bundle, r.Version),
		"qwen-appliance.io/manifest-sha256": r.ManifestSHA256,
		"qwen-appliance.io/runtime-image":   r.RuntimeImage,
	}
	var archived []string
	for _, im := range r.Images {
		archived = append(archived, im.Ref)
		ann["qwen-appliance.io/"+im.Role+"-image"] = im.Pinned()
	}
	return map[string]any{
		"kind": "ZarfPackageConfig",
		"metadata": map[string]any{
			"name":         name,
			"description":  fmt.Sprintf("%s version %d behind the qwen-appliance gateway; the model image is the signed bundle, verified at every pod start", r.Bundle, r.Version),
			"version":      fmt.Sprintf("%d.0.0", r.Version),
			"architecture": r.Arch,
			"annotations":  ann,
		},
		"components": []any{map[string]any{
			"name":        "qwen-appliance",
			"description": "vLLM and the authenticated, audited gateway, with a default-deny NetworkPolicy",
			"required":    true,
			"charts": []any{map[string]any{
				"name":        ChartName,
				"localPath":   ZarfChartDir,
				"namespace":   ns,
				"version":     fmt.Sprintf("%d.0.0", r.Version),
				"releaseName": name,
			}},
			"imageArchives": []any{map[string]any{"path": ZarfArchive, "images": archived}},
			"images":        []any{r.RuntimeImage},
		}},
	}
}

// CheckZarf validates a zarf.yaml document against Zarf's own schema.
func CheckZarf(data []byte) error {
	return validateYAML(data, zarfCompiled, "not valid against Zarf's schema: ")
}

// zarfCompiled compiles Zarf's schema once.
var zarfCompiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(zarfSchema))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("zarf-v1alpha1-schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("zarf-v1alpha1-schema.json")
})

// tarDir writes the regular files and directories under dir into a tar
// archive at dst, sorted, root-owned, with a fixed time, so the same
// layout always gives the same archive.
func tarDir(dir, dst string) (err error) {
	var paths []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(paths)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	epoch := time.Unix(0, 0).UTC()
	for _, p := range paths {
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
				return err
			}
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: st.Size(), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Sync()
}
