package export

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

var created = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// testBundle writes a small signed bundle (a model file, a tokenizer, a
// runtime artefact) and returns its directory and the verifier that
// accepts it.
func testBundle(t *testing.T) (string, manifests.Verifier) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "bundle")
	files := map[string]string{
		"model/weights.gguf":     strings.Repeat("weights ", 5000),
		"model/tokenizer.json":   `{"model": "bpe"}`,
		"runtime/README.txt":     "runtime artefacts",
		"runtime/bin/run-server": "#!/bin/true\n",
	}
	for p, s := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.Contains(p, "/bin/") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifests.Create(context.Background(), dir, manifests.CreateOptions{
		Name: "tiny-qwen", Version: 3, Created: created, Expires: created.Add(100 * 365 * 24 * time.Hour),
		Meta: manifests.Meta{
			Model:   manifests.Model{Name: "test/tiny", Dtype: "bf16"},
			Runtime: manifests.Runtime{Kind: "vllm", ModelPath: "model/weights.gguf", ServedModelName: "tiny", DefaultContext: 4096, GPUMemoryUtilization: 0.85},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := manifests.Write(dir, m, key); err != nil {
		t.Fatal(err)
	}
	return dir, manifests.Verifier{Trusted: []manifests.PublicKey{key.Public()}}
}

const runtimeImage = "vllm/vllm-openai@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func testOptions(t *testing.T, bundle string, v manifests.Verifier) Options {
	t.Helper()
	bin, err := os.Executable() // an ELF executable, as the gateway binary is
	if err != nil {
		t.Fatal(err)
	}
	return Options{Bundle: bundle, Verifier: v, Out: filepath.Join(t.TempDir(), "chart"), RuntimeImage: runtimeImage, Binary: bin}
}

func TestHelmWritesChartAndImages(t *testing.T) {
	bundle, v := testBundle(t)
	o := testOptions(t, bundle, v)
	res, err := Helm(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Bundle != "tiny-qwen" || res.Version != 3 || len(res.Images) != 2 || res.TensorParallel != 1 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range []string{"Chart.yaml", "values.yaml", "values.schema.json", ".helmignore", "templates/gateway-statefulset.yaml", "templates/runtime-deployment.yaml", "templates/_helpers.tpl", "images/index.json"} {
		if _, err := os.Stat(filepath.Join(o.Out, f)); err != nil {
			t.Errorf("chart lacks %s: %v", f, err)
		}
	}
	checkLayout(t, res, bundle)

	// --images puts the layout elsewhere; the chart then has none.
	o = testOptions(t, bundle, v)
	o.Images = filepath.Join(t.TempDir(), "layout")
	if res, err = Helm(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if res.Layout != o.Images {
		t.Fatalf("layout at %s, asked for %s", res.Layout, o.Images)
	}
	if _, err := os.Stat(filepath.Join(o.Out, "images")); !os.IsNotExist(err) {
		t.Fatalf("the chart has an images directory besides --images: %v", err)
	}
	checkLayout(t, res, bundle)
}

// checkLayout reads the OCI layout back with go-containerregistry: the
// digests are the ones reported, every blob hashes to its name, the model
// image's files hash to the signed manifest, and the gateway image holds
// the binary, run as a non-root user.
func checkLayout(t *testing.T, res *Result, bundle string) {
	t.Helper()
	imgs, err := readLayout(res.Layout)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range res.Images {
		img, ok := imgs[want.Ref]
		if !ok {
			t.Fatalf("layout has no image named %s (has %v)", want.Ref, keys(imgs))
		}
		d, err := img.Digest()
		if err != nil || d.String() != want.Digest {
			t.Fatalf("%s: digest %s, reported %s (%v)", want.Ref, d, want.Digest, err)
		}
		if err := checkImage(img); err != nil {
			t.Fatalf("%s: %v", want.Ref, err)
		}
		switch want.Role {
		case "model":
			if err := modelMatchesBundle(img, bundle); err != nil {
				t.Fatal(err)
			}
		case "gateway":
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != BinaryPath || cfg.OS != "linux" {
				t.Fatalf("gateway config %+v", cfg.Config)
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// readLayout opens an OCI layout and returns its images by ref name.
func readLayout(dir string) (map[string]v1.Image, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := map[string]v1.Image{}
	for _, desc := range im.Manifests {
		img, err := idx.Image(desc.Digest)
		if err != nil {
			return nil, err
		}
		out[desc.Annotations["org.opencontainers.image.ref.name"]] = img
	}
	return out, nil
}

// checkImage re-hashes everything go-containerregistry reads from the
// layout: the manifest against the image digest, the config against its
// descriptor, every layer blob against its digest (and, the layers being
// uncompressed, against the config's DiffIDs). validate.Image cannot be
// used: it assumes gzip layers.
func checkImage(img v1.Image) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	if sha256Hex(raw) != d.Hex {
		return errors.New("manifest does not hash to the image digest")
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	cfgRaw, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if sha256Hex(cfgRaw) != m.Config.Digest.Hex {
		return errors.New("config does not hash to its descriptor")
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	if cfg.RootFS.Type != "layers" || len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return errors.New("config rootfs does not list the layers")
	}
	for i, desc := range m.Layers {
		l, err := img.LayerByDigest(desc.Digest)
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return err
		}
		if hex.EncodeToString(h.Sum(nil)) != desc.Digest.Hex || n != desc.Size {
			return errors.New("layer " + desc.Digest.String() + ": blob does not hash to its digest")
		}
		if cfg.RootFS.DiffIDs[i] != desc.Digest || desc.MediaType != "application/vnd.oci.image.layer.v1.tar" {
			return errors.New("layer " + desc.Digest.String() + ": not an uncompressed layer listed in the config")
		}
	}
	return nil
}

// modelMatchesBundle flattens the model image and compares it with the
// signed manifest in the bundle: every listed file with its size, mode and
// SHA-256, manifest.json and manifest.sig byte for byte, nothing else.
func modelMatchesBundle(img v1.Image, bundle string) error {
	raw, err := os.ReadFile(filepath.Join(bundle, manifests.ManifestFile))
	if err != nil {
		return err
	}
	m, err := manifests.Parse(raw)
	if err != nil {
		return err
	}
	sig, err := os.ReadFile(filepath.Join(bundle, manifests.SignatureFile))
	if err != nil {
		return err
	}
	want := map[string]manifests.File{}
	for _, f := range m.Files {
		want[f.Path] = f
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return errors.New(h.Name + ": not a regular file")
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		seen[h.Name] = true
		switch h.Name {
		case manifests.ManifestFile:
			if string(data) != string(raw) {
				return errors.New("manifest.json in the image differs from the signed one")
			}
			continue
		case manifests.SignatureFile:
			if string(data) != string(sig) {
				return errors.New("manifest.sig in the image differs")
			}
			continue
		}
		f, ok := want[h.Name]
		if !ok {
			return errors.New(h.Name + ": in the image, not in the manifest")
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(data)) != f.Size || h.Mode != int64(f.FileMode()) {
			return errors.New(h.Name + ": differs from the manifest")
		}
	}
	for p := range want {
		if !seen[p] {
			return errors.New(p + ": in the manifest, not in the image")
		}
	}
	if !seen[manifests.ManifestFile] || !seen[manifests.SignatureFile] {
		return errors.New("the image lacks manifest.json or manifest.sig")
	}
	return nil
}

// The read-back checks fail on a layout whose blob was changed, and on a
// model image whose file differs from the manifest.
func TestLayoutChecksCatchTampering(t *testing.T) {
	bundle, v := testBundle(t)
	res, err := Helm(context.Background(), testOptions(t, bundle, v))
	if err != nil {
		t.Fatal(err)
	}
	var model Image
	for _, im := range res.Images {
		if im.Role == "model" {
			model = im
		}
	}
	imgs, err := readLayout(res.Layout)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := imgs[model.Ref].Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := layers[len(layers)-2].Digest() // a file layer, not manifest.json's
	blob := filepath.Join(res.Layout, "blobs", "sha256", d.Hex)
	data, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(data), "bpe") // inside model/tokenizer.json's bytes
	if i < 0 {
		i = len(data) - 2048 // the tar's end padding, at least
	}
	data[i] ^= 0x20
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	imgs, err = readLayout(res.Layout)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkImage(imgs[model.Ref]); err == nil {
		t.Fatal("checkImage accepted a changed layer blob")
	}

	// A model image built from a bundle that no longer matches its
	// manifest is caught by the manifest comparison.
	other, v2 := testBundle(t)
	s, err := v2.Open(other)
	if err != nil {
		t.Fatal(err)
	}
	sig, _ := os.ReadFile(filepath.Join(other, manifests.SignatureFile))
	img, err := modelImage(other, s, sig, "amd64")
	if err != nil {
		t.Fatal(err)
	}
	if err := modelMatchesBundle(img, bundle); err == nil {
		t.Fatal("a model image of another bundle matched this bundle's manifest")
	}
}

// A file that changes after the layer's digest was computed makes the
// layer's stream fail instead of writing a blob under a wrong digest.
func TestLayerRefusesChangedFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "w")
	if err := os.WriteFile(p, []byte("original"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := fileEntry("w", p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	l, err := newTarLayer([]entry{e}, created)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("replaced"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("reading a layer whose file changed: err = %v, want ErrChanged", err)
	}
	// And a layer is refused outright when the file differs from the
	// signed hash before it is made.
	e.sha256 = strings.Repeat("0", 64)
	if _, err := newTarLayer([]entry{e}, created); !errors.Is(err, ErrChanged) {
		t.Fatalf("err = %v, want ErrChanged", err)
	}
}

func TestHelmIsDeterministic(t *testing.T) {
	bundle, v := testBundle(t)
	a, err := Helm(context.Background(), testOptions(t, bundle, v))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Helm(context.Background(), testOptions(t, bundle, v))
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Images {
		if a.Images[i] != b.Images[i] {
			t.Errorf("two exports differ: %+v and %+v", a.Images[i], b.Images[i])
		}
	}
	va, _ := os.ReadFile(filepath.Join(a.Chart, "values.yaml"))
	vb, _ := os.ReadFile(filepath.Join(b.Chart, "values.yaml"))
	if string(va) != string(vb) {
		t.Error("two exports wrote different values.yaml")
	}
}

// A bundle that fails verification is refused before anything is written.
func TestHelmRefusesBadBundles(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(t *testing.T, dir string, v *manifests.Verifier)
	}{
		{"a changed model byte", func(t *testing.T, dir string, _ *manifests.Verifier) {
			p := filepath.Join(dir, "model", "weights.gguf")
			data, _ := os.ReadFile(p)
			data[100] ^= 1
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"an extra file", func(t *testing.T, dir string, _ *manifests.Verifier) {
			if err := os.WriteFile(filepath.Join(dir, "model", "extra.bin"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"an untrusted key", func(t *testing.T, _ string, v *manifests.Verifier) {
			k, _ := manifests.GenerateKey(nil)
			v.Trusted = []manifests.PublicKey{k.Public()}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			bundle, v := testBundle(t)
			c.change(t, bundle, &v)
			o := testOptions(t, bundle, v)
			_, err := Helm(context.Background(), o)
			if !errors.Is(err, manifests.ErrVerification) {
				t.Fatalf("err = %v, want a verification error", err)
			}
			if _, serr := os.Stat(o.Out); !os.IsNotExist(serr) {
				t.Fatalf("%s exists after a refusal", o.Out)
			}
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(o.Out), ".*"))
			if len(left) > 0 {
				t.Fatalf("left behind: %v", left)
			}
		})
	}
}

func TestHelmRefusesBadOptions(t *testing.T) {
	bundle, v := testBundle(t)
	for _, c := range []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"a runtime image by tag", func(o *Options) { o.RuntimeImage = "vllm/vllm-openai:latest" }, "not pinned by digest"},
		{"an output that exists", func(o *Options) { o.Out = t.TempDir() }, "already exists"},
		{"a binary that is not ELF", func(o *Options) { o.Binary = filepath.Join(bundle, "model", "tokenizer.json") }, "not an ELF executable"},
		{"a plan for another bundle", func(o *Options) {
			o.Plan = []byte(`{"bundle":"other","version":3,"mode":"gpu","verdict":"pass","plan":{"verdict":"fits","tensorParallel":2,"devices":[0,1],"context":8192}}`)
			o.PlanName = "plan.json"
		}, "is for other version 3"},
		{"a registry with upper case", func(o *Options) { o.Registry = "Registry.Local" }, "registry"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := testOptions(t, bundle, v)
			c.edit(&o)
			_, err := Helm(context.Background(), o)
			if !errors.Is(err, ErrOption) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrOption with %q", err, c.want)
			}
		})
	}
}
