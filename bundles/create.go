package bundles

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/fetch"
	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

var (
	hexRE    = regexp.MustCompile(`^[0-9a-f]{64}$`)
	commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// CreateOptions are the inputs of Create besides the spec.
type CreateOptions struct {
	Out string // the bundle directory to write; must not exist or be empty
	// Cache holds partial downloads so an interrupted Create resumes; by
	// default a hidden sibling of Out (same filesystem, so finished files are
	// renamed, not copied), removed once the bundle is complete.
	Cache string
	Key   manifests.PrivateKey
	Jobs  int           // files fetched at once; 4 when 0
	Valid time.Duration // how long the manifest stays valid; 365 days when 0
	Now   func() time.Time
	// Artifacts overrides runtime artefacts: NAME → "URL" or "URL#sha256=HEX".
	Artifacts map[string]string
	// AllowUnpinned fetches artefacts and sources that have no SHA-256 pin,
	// recording the hash of what arrived (marked unpinned in the SBOM).
	AllowUnpinned bool
	Hub           *fetch.Hub   // fetch.HubFromEnv when nil
	HTTP          *http.Client // for hub and HTTP downloads
	Retries       int
	Backoff       time.Duration
	Progress      *progress.Reporter
	Tool          string // version written into the provenance
}

// Result describes a created bundle.
type Result struct {
	Dir      string              `json:"dir"`
	Manifest *manifests.Manifest `json:"-"`
	Name     string              `json:"name"`
	Version  uint64              `json:"version"`
	Revision string              `json:"revision,omitempty"`
	Files    int                 `json:"files"`
	Bytes    int64               `json:"bytes"`
	Unpinned []string            `json:"unpinned,omitempty"`
	Skipped  []string            `json:"skipped,omitempty"` // optional artefacts not supplied
}

// item is one file to fetch.
type item struct {
	dest     string
	want     fetch.Want
	kind     string
	gen      *Generator
	role     string
	source   string
	revision string
	license  string
	mode     string
	unpinned bool
	digest   fetch.Digest
	part     string
	tree     []treeFile // files of a git checkout (kindGit), under part
}

// kindGit marks a git repository fetched by go-getter as a directory.
const kindGit = "git"

// treeFile is one file of a fetched directory, relative to its dest.
type treeFile struct {
	rel    string
	mode   string
	digest fetch.Digest
}

// Create fetches everything spec names, checks every byte against its pin,
// and writes a bundle to opts.Out: the files, the SBOM, and manifest.json
// with its signature. Nothing is signed unless every file matched; a hash
// mismatch is a *fetch.MismatchError (matching manifests.ErrVerification).
// The bundle appears at Out only when complete.
func Create(ctx context.Context, spec *specs.Spec, opts CreateOptions) (*Result, error) {
	if opts.Key.Key == nil {
		return nil, errors.New("create bundle: no signing key")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	if opts.Valid <= 0 {
		opts.Valid = 365 * 24 * time.Hour
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 4
	}
	// Absolute: manifests' walks compare paths textually.
	out, err := filepath.Abs(opts.Out)
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if err := space.EmptyOrAbsent(out); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	client := &fetch.Client{HTTP: opts.HTTP, Retries: opts.Retries, Backoff: opts.Backoff, Progress: opts.Progress}
	hub := opts.Hub
	if hub == nil {
		hub = fetch.HubFromEnv(client)
	}
	if hub.Client == nil {
		hub.Client = client
	}
	meta := spec.Meta()
	res := &Result{Name: spec.Name, Version: spec.Version}

	items, revision, err := plan(ctx, spec, opts, hub, &meta, res)
	if err != nil {
		return nil, err
	}
	res.Revision = revision

	cache := opts.Cache
	defaultCache := cache == ""
	if defaultCache {
		cache = filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+".partial")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("create bundle: cache: %w", err)
	}
	var need int64
	for _, it := range items {
		it.part = filepath.Join(cache, partName(it))
		if it.want.Size > 0 {
			need += it.want.Size
			if st, err := os.Stat(it.part); err == nil && st.Size() <= it.want.Size {
				need -= st.Size()
			}
		}
	}
	if err := space.Check(cache, need, "the downloads"); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if !defaultCache {
		if err := space.Check(filepath.Dir(out), need, "the bundle"); err != nil {
			return nil, fmt.Errorf("create bundle: %w", err)
		}
	}
	var total int64
	for _, it := range items {
		total += max(it.want.Size, 0)
	}
	opts.Progress.SetTotal(total)
	if err := fetchAll(ctx, client, items, opts.Jobs); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	// Nothing is signed that preflight would refuse for want of facts.
	read, errs := fillFacts(items, &meta)
	if miss := missingFacts(meta.Model, true); len(miss) > 0 {
		return nil, inputError{&MissingFactsError{Spec: spec.Name, Fields: miss, Read: read, Errs: errs}}
	}

	// Assemble next to Out and rename once complete.
	stage, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".stage-")
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if err := os.Chmod(stage, 0o755); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(stage)
		}
	}()
	m, err := assemble(ctx, stage, spec, opts, items, meta, revision, now())
	if err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if err := os.Remove(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	if err := os.Rename(stage, out); err != nil {
		return nil, fmt.Errorf("create bundle: %w", err)
	}
	done = true
	if defaultCache {
		os.RemoveAll(cache)
	}
	res.Dir, res.Manifest, res.Files, res.Bytes = out, m, len(m.Files), m.TotalSize()
	return res, nil
}

// partName is the cache file of an item: the same address and pin resume
// the same partial file.
func partName(it *item) string {
	sum := sha256.Sum256([]byte(it.want.URL + "\n" + it.want.SHA256 + "\n" + it.dest))
	return hex.EncodeToString(sum[:12]) + "-" + path.Base(it.dest) + ".part"
}

// assemble moves the fetched files into stage, writes the SBOM and the signed
// manifest, and checks that stage holds exactly what the manifest lists.
func assemble(ctx context.Context, stage string, spec *specs.Spec, opts CreateOptions, items []*item, meta manifests.Meta, revision string, created time.Time) (*manifests.Manifest, error) {
	var files []manifests.File
	var sfiles []sbomFile
	for _, it := range items {
		if it.kind == kindGit {
			for _, tf := range it.tree {
				p := it.dest + "/" + tf.rel
				dst := filepath.Join(stage, filepath.FromSlash(p))
				if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
					return nil, err
				}
				if err := moveFile(filepath.Join(it.part, filepath.FromSlash(tf.rel)), dst); err != nil {
					return nil, fmt.Errorf("place %s: %w", p, err)
				}
				if err := os.Chmod(dst, os.FileMode(manifests.File{Mode: tf.mode}.FileMode())); err != nil {
					return nil, err
				}
				files = append(files, manifests.File{Path: p, Size: tf.digest.Size, Mode: tf.mode, SHA256: tf.digest.SHA256,
					ChunkSize: tf.digest.ChunkSize, Chunks: tf.digest.Chunks})
				sfiles = append(sfiles, sbomFile{Path: p, Size: tf.digest.Size, SHA256: tf.digest.SHA256, Role: it.role,
					Source: it.source, Revision: it.revision, License: it.license, Unpinned: it.unpinned})
			}
			continue
		}
		dst := filepath.Join(stage, filepath.FromSlash(it.dest))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := moveFile(it.part, dst); err != nil {
			return nil, fmt.Errorf("place %s: %w", it.dest, err)
		}
		mode := manifests.File{Mode: it.mode}.FileMode()
		if err := os.Chmod(dst, os.FileMode(mode)); err != nil {
			return nil, err
		}
		files = append(files, manifests.File{Path: it.dest, Size: it.digest.Size, Mode: it.mode, SHA256: it.digest.SHA256,
			ChunkSize: it.digest.ChunkSize, Chunks: it.digest.Chunks})
		sfiles = append(sfiles, sbomFile{Path: it.dest, Size: it.digest.Size, SHA256: it.digest.SHA256, Role: it.role,
			Source: it.source, Revision: it.revision, License: it.license, Unpinned: it.unpinned})
	}
	sort.Slice(sfiles, func(i, j int) bool { return sfiles[i].Path < sfiles[j].Path })
	sbom, err := buildSBOM(spec, revision, opts.Tool, created, sfiles)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(stage, SBOMFile), sbom, 0o644); err != nil {
		return nil, err
	}
	d, err := fetch.HashReader(ctx, strings.NewReader(string(sbom)), 0)
	if err != nil {
		return nil, err
	}
	files = append(files, manifests.File{Path: SBOMFile, Size: d.Size, Mode: "0644", SHA256: d.SHA256, ChunkSize: d.ChunkSize, Chunks: d.Chunks})
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })

	meta.Provenance = manifests.Provenance{Source: spec.Model.Sources[0].URL, Revision: revision, Tool: opts.Tool}
	created = created.UTC().Truncate(time.Second)
	m := &manifests.Manifest{
		SchemaVersion: manifests.SchemaVersion, Name: spec.Name, Version: spec.Version,
		Created: created, Expires: created.Add(opts.Valid),
		Model: meta.Model, Requirements: meta.Requirements, Runtime: meta.Runtime, Provenance: meta.Provenance,
		Files: files,
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	// Type, size, mode and nothing extra: the hashes came from the download.
	if err := manifests.CheckFiles(ctx, stage, m, manifests.CheckOptions{Select: func(manifests.File) []int { return nil }}); err != nil {
		return nil, err
	}
	if err := manifests.Write(stage, m, opts.Key); err != nil {
		return nil, err
	}
	return m, nil
}

// moveFile renames src to dst, copying when they are on different
// filesystems.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := errors.Join(out.Sync(), out.Close()); err != nil {
		return err
	}
	return os.Remove(src)
}
