package export

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Paths inside the images.
const (
	// BinaryPath is where the gateway image holds qwen-appliance.
	BinaryPath = "/usr/local/bin/qwen-appliance"
	// NonRootUID is the user every container of the chart runs as.
	NonRootUID = 65532
)

// Image is one image written to the OCI layout.
type Image struct {
	Role   string `json:"role"`   // "model" or "gateway"
	Ref    string `json:"ref"`    // name:tag, as annotated in the layout
	Digest string `json:"digest"` // sha256:… of the image manifest
	Bytes  int64  `json:"bytes"`  // config and layers
}

// Pinned is the reference by digest pods use: name:tag@sha256:….
func (i Image) Pinned() string { return i.Ref + "@" + i.Digest }

// modelImage holds the bundle exactly as signed: every file at its
// manifest path, with its signed mode, plus manifest.json and manifest.sig
// at the root, so 'qwen-appliance manifest verify' run on the mounted image
// checks it as it checks a bundle directory. One layer per file, so a
// registry or node that has a shard already skips it; manifest.json and
// the signature come last.
func modelImage(dir string, s *manifests.Signed, sig []byte, arch string) (v1.Image, error) {
	m := s.Manifest
	var layers []v1.Layer
	for _, f := range m.Files {
		l, err := newTarLayer([]entry{{
			name: f.Path, mode: int64(f.FileMode()), size: f.Size, sha256: f.SHA256,
			src: filepath.Join(dir, filepath.FromSlash(f.Path)),
		}}, m.Created)
		if err != nil {
			return nil, fmt.Errorf("model image: %w", err)
		}
		layers = append(layers, l)
	}
	l, err := newTarLayer([]entry{memEntry(manifests.ManifestFile, s.Raw), memEntry(manifests.SignatureFile, sig)}, m.Created)
	if err != nil {
		return nil, fmt.Errorf("model image: %w", err)
	}
	layers = append(layers, l)
	cfg := &v1.ConfigFile{
		Architecture: arch, OS: "linux", Created: v1.Time{Time: m.Created},
		Config: v1.Config{Labels: map[string]string{
			"org.opencontainers.image.title":       m.Name,
			"org.opencontainers.image.version":     fmt.Sprint(m.Version),
			"org.opencontainers.image.description": "signed qwen-appliance bundle " + m.Name + " (verify with 'qwen-appliance manifest verify')",
			"io.qwen-appliance.manifest.sha256":    sha256Hex(s.Raw),
		}},
	}
	return build(cfg, layers, m.Created)
}

// gatewayImage holds the qwen-appliance binary and, when it is dynamically
// linked, its loader and libraries, and nothing else: no shell, no package
// manager. It runs as NonRootUID.
func gatewayImage(bin string, facts binaryFacts, created time.Time) (v1.Image, error) {
	var layers []v1.Layer
	if len(facts.Libs) > 0 {
		var libs []entry
		names := make([]string, 0, len(facts.Libs))
		for n := range facts.Libs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			e, err := fileEntry(n, facts.Libs[n], 0o755)
			if err != nil {
				return nil, fmt.Errorf("gateway image: %w", err)
			}
			libs = append(libs, e)
		}
		l, err := newTarLayer(libs, created)
		if err != nil {
			return nil, fmt.Errorf("gateway image: %w", err)
		}
		layers = append(layers, l)
	}
	e, err := fileEntry(BinaryPath[1:], bin, 0o755)
	if err != nil {
		return nil, fmt.Errorf("gateway image: %w", err)
	}
	l, err := newTarLayer([]entry{e}, created)
	if err != nil {
		return nil, fmt.Errorf("gateway image: %w", err)
	}
	layers = append(layers, l)
	cfg := &v1.ConfigFile{
		Architecture: facts.Arch, OS: "linux", Created: v1.Time{Time: created},
		Config: v1.Config{
			Entrypoint: []string{BinaryPath},
			Cmd:        []string{"--help"},
			User:       fmt.Sprintf("%d:%d", NonRootUID, NonRootUID),
			WorkingDir: "/",
			Env:        []string{"PATH=/usr/local/bin"},
			Labels: map[string]string{
				"org.opencontainers.image.title":  "qwen-appliance",
				"io.qwen-appliance.binary.sha256": e.sha256,
			},
		},
	}
	return build(cfg, layers, created)
}

// build makes an OCI image (OCI media types throughout) from a config and
// layers, with one history entry per layer at the given time so the same
// inputs always give the same digest.
func build(cfg *v1.ConfigFile, layers []v1.Layer, created time.Time) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg.RootFS.Type = "layers"
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: created.UTC()}, CreatedBy: "qwen-appliance export"}}
	}
	return mutate.Append(img, adds...)
}

// writeImages writes imgs into an OCI image layout at dir (created empty),
// each annotated with its reference, and returns what was written.
func writeImages(dir string, imgs map[string]v1.Image, refs map[string]string) ([]Image, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	var out []Image
	for _, role := range []string{"gateway", "model"} {
		img, ok := imgs[role]
		if !ok {
			continue
		}
		if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": refs[role],
		})); err != nil {
			return nil, fmt.Errorf("write %s image to %s: %w", role, dir, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		size, err := imageBytes(img)
		if err != nil {
			return nil, err
		}
		out = append(out, Image{Role: role, Ref: refs[role], Digest: d.String(), Bytes: size})
	}
	return out, nil
}

func imageBytes(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

func memEntry(name string, data []byte) entry {
	return entry{name: name, mode: 0o644, size: int64(len(data)), sha256: sha256Hex(data), data: data}
}

// fileEntry hashes a file from this machine (not part of a signed bundle)
// so that its layer refuses it if it changes while being written.
func fileEntry(name, src string, mode int64) (entry, error) {
	f, err := os.Open(src)
	if err != nil {
		return entry{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return entry{}, err
	}
	if !st.Mode().IsRegular() {
		return entry{}, fmt.Errorf("%s: not a regular file", src)
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return entry{}, fmt.Errorf("hash %s: %w", src, err)
	}
	return entry{name: name, mode: mode, size: n, sha256: hex.EncodeToString(h.Sum(nil)), src: src}, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
