package export

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestZarfPackage(t *testing.T) {
	bundle, v := testBundle(t)
	o := testOptions(t, bundle, v)
	o.Out = filepath.Join(t.TempDir(), "pkg")
	res, err := Zarf(context.Background(), ZarfOptions{Options: o, Namespace: "llm"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(res.ZarfYAML)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckZarf(data); err != nil {
		t.Fatalf("zarf.yaml is not valid: %v\n%s", err, data)
	}
	// The schema copy is Zarf's: the same bytes as the shared one, when
	// this machine has it.
	if shared, err := os.ReadFile("/work/shared/data/zarf-schema/zarf-v1alpha1-schema.json"); err == nil && string(shared) != string(zarfSchema) {
		t.Error("zarfschema/zarf-v1alpha1-schema.json differs from the shared copy of Zarf's schema")
	}
	var doc struct {
		Kind       string
		Components []struct {
			Charts []struct {
				LocalPath string `yaml:"localPath"`
				Namespace string
			}
			ImageArchives []struct {
				Path   string
				Images []string
			} `yaml:"imageArchives"`
			Images []string
		}
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	c := doc.Components[0]
	if c.Charts[0].LocalPath != ZarfChartDir || c.Charts[0].Namespace != "llm" || c.Images[0] != runtimeImage {
		t.Fatalf("zarf.yaml %+v", doc)
	}
	if _, err := os.Stat(filepath.Join(o.Out, c.Charts[0].LocalPath, "Chart.yaml")); err != nil {
		t.Fatal(err)
	}
	// The archive is an OCI layout holding exactly the images zarf.yaml
	// names, with the digests the chart pins.
	layoutDir := filepath.Join(t.TempDir(), "layout")
	untar(t, filepath.Join(o.Out, c.ImageArchives[0].Path), layoutDir)
	res.Layout = layoutDir
	checkLayout(t, &res.Result, bundle)
	imgs, err := readLayout(layoutDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != len(c.ImageArchives[0].Images) {
		t.Fatalf("archive has %v, zarf.yaml names %v", keys(imgs), c.ImageArchives[0].Images)
	}
	values, _ := os.ReadFile(filepath.Join(o.Out, ZarfChartDir, "values.yaml"))
	for _, name := range c.ImageArchives[0].Images {
		if _, ok := imgs[name]; !ok {
			t.Errorf("zarf.yaml names %s, which the archive lacks", name)
		}
		if !strings.Contains(string(values), name+"@sha256:") {
			t.Errorf("the chart does not pin %s by digest", name)
		}
	}
}

// The schema check refuses what Zarf would: an unknown field, a component
// name with capitals, no components.
func TestCheckZarfRefuses(t *testing.T) {
	for name, doc := range map[string]string{
		"an unknown field":     "kind: ZarfPackageConfig\nmetadata: {name: x}\ncomponents: [{name: a, chart: []}]\n",
		"a capitalised name":   "kind: ZarfPackageConfig\nmetadata: {name: x}\ncomponents: [{name: Qwen}]\n",
		"no components":        "kind: ZarfPackageConfig\nmetadata: {name: x}\ncomponents: []\n",
		"a wrong kind":         "kind: ZarfPackage\nmetadata: {name: x}\ncomponents: [{name: a}]\n",
		"an archive no images": "kind: ZarfPackageConfig\nmetadata: {name: x}\ncomponents: [{name: a, imageArchives: [{path: i.tar}]}]\n",
	} {
		if err := CheckZarf([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := CheckZarf([]byte("kind: ZarfPackageConfig\nmetadata: {name: x}\ncomponents: [{name: a}]\n")); err != nil {
		t.Errorf("a minimal package: %v", err)
	}
}

func untar(t *testing.T, archive, dir string) {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("archive entry %q escapes", h.Name)
		}
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		w, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		w.Close()
	}
}
