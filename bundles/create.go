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
	"sync"
	"syscall"
	"time"

	"github.com/qwen-appliance/qwen-appliance/bundles/fetch"
	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
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
	if err := checkOut(out); err != nil {
		return nil, err
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

// checkOut refuses an output that exists and is not an empty directory.
func checkOut(out string) error {
	ents, err := os.ReadDir(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("create bundle: %w", err)
	case len(ents) > 0:
		return fmt.Errorf("create bundle: %s exists and is not empty; choose a new --out", out)
	}
	return nil
}

// partName is the cache file of an item: the same address and pin resume
// the same partial file.
func partName(it *item) string {
	sum := sha256.Sum256([]byte(it.want.URL + "\n" + it.want.SHA256 + "\n" + it.dest))
	return hex.EncodeToString(sum[:12]) + "-" + path.Base(it.dest) + ".part"
}

// plan resolves the spec's sources into the list of files to fetch.
func plan(ctx context.Context, spec *specs.Spec, opts CreateOptions, hub *fetch.Hub, meta *manifests.Meta, res *Result) ([]*item, string, error) {
	var items []*item
	revision := ""
	for i, src := range spec.Model.Sources {
		field := fmt.Sprintf("model.sources[%d]", i)
		switch specs.SourceKind(src.URL) {
		case specs.KindHF:
			repo, rev, _ := specs.ParseHF(src.URL)
			if !commitRE.MatchString(rev) && !opts.AllowUnpinned {
				return nil, "", spec.Errorf(field+".url", "revision %q is not a 40-hex commit; pin one (or pass --allow-unpinned)", rev)
			}
			r, err := hub.Resolve(ctx, repo, rev)
			if err != nil {
				return nil, "", err
			}
			if commitRE.MatchString(rev) && r.Commit != rev {
				return nil, "", fmt.Errorf("%w: %s: the hub resolved %s to commit %s", manifests.ErrVerification, src.URL, rev, r.Commit)
			}
			if revision == "" {
				revision = r.Commit
			}
			dir := strings.TrimSuffix(src.Dest, "/")
			if dir == "" {
				dir = "model"
			}
			matched := map[string]bool{}
			for _, f := range r.Files {
				if !included(f.Path, src.Include) {
					continue
				}
				pin := src.Files[f.Path]
				if pin != "" && f.SHA256 != "" && pin != f.SHA256 {
					return nil, "", fmt.Errorf("%w: %s: the hub advertises sha256 %s, the spec pins %s", manifests.ErrVerification, f.Path, f.SHA256, pin)
				}
				matched[f.Path] = true
				dest := dir + "/" + f.Path
				w := hub.Want(r, f, dest, pin)
				items = append(items, &item{dest: dest, want: w, kind: specs.KindHF, role: "model", source: src.URL,
					revision: r.Commit, license: spec.Model.License, mode: "0644"})
			}
			for p := range src.Files {
				if !matched[p] {
					return nil, "", spec.Errorf(field+".files."+p, "the hub lists no such file at %s (or include leaves it out)", r.Commit)
				}
			}
			if len(matched) == 0 {
				return nil, "", spec.Errorf(field+".include", "no file of %s@%s matches", repo, r.Commit)
			}
		case specs.KindGenerated:
			g, err := lookupGenerator(src.URL)
			if err != nil {
				return nil, "", spec.Errorf(field+".url", "%v", err)
			}
			gm := g.Meta()
			meta.Model = overlay(gm.Model, meta.Model)
			meta.Runtime = overlay(gm.Runtime, meta.Runtime)
			meta.Requirements = overlay(gm.Requirements, meta.Requirements)
			items = append(items, &item{dest: src.Dest, want: fetch.Want{Name: src.Dest, URL: src.URL, Size: -1, SHA256: src.SHA256},
				kind: specs.KindGenerated, gen: &g, role: "model", source: src.URL, license: spec.Model.License, mode: "0644"})
		default:
			it, err := fileItem(spec, field, src.URL, src.SHA256, src.Dest, opts.AllowUnpinned)
			if err != nil {
				return nil, "", err
			}
			it.role, it.license, it.mode = "model", spec.Model.License, "0644"
			if it.unpinned {
				res.Unpinned = append(res.Unpinned, it.dest)
			}
			items = append(items, it)
		}
	}
	known := map[string]bool{}
	for _, a := range spec.Runtime.Artifacts {
		known[a.Name] = true
	}
	for name := range opts.Artifacts {
		if !known[name] {
			var names []string
			for n := range known {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, "", fmt.Errorf("--artifact %s: the spec has no such runtime artefact (it has: %s)", name, strings.Join(names, ", "))
		}
	}
	for i, a := range spec.Runtime.Artifacts {
		field := fmt.Sprintf("runtime.artifacts[%d]", i)
		url, sum := a.URL, a.SHA256
		if o, ok := opts.Artifacts[a.Name]; ok {
			url, sum = o, ""
			if u, s, ok := strings.Cut(o, "#sha256="); ok {
				url, sum = u, s
				if !hexRE.MatchString(sum) {
					return nil, "", fmt.Errorf("--artifact %s: sha256 %q is not 64 lower-case hex digits", a.Name, sum)
				}
			}
		}
		if url == "" {
			if a.Optional {
				res.Skipped = append(res.Skipped, a.Name)
				opts.Progress.Note("runtime artefact %s not supplied (optional); pass --artifact %s=URL to include it", a.Name, a.Name)
				continue
			}
			return nil, "", spec.Errorf(field+".url", "%s has no URL; pass --artifact %s=URL#sha256=HEX", a.Name, a.Name)
		}
		it, err := fileItem(spec, field, url, sum, a.Dest, opts.AllowUnpinned)
		if err != nil {
			return nil, "", err
		}
		it.role, it.license, it.mode = "runtime", a.License, a.Mode
		if it.mode == "" {
			it.mode = "0644"
		}
		if it.unpinned {
			res.Unpinned = append(res.Unpinned, it.dest)
		}
		items = append(items, it)
	}
	return items, revision, nil
}

// fileItem plans a single-file source (http, file or go-getter).
func fileItem(spec *specs.Spec, field, url, sum, dest string, allowUnpinned bool) (*item, error) {
	it := &item{dest: dest, source: url, kind: specs.SourceKind(url),
		want: fetch.Want{Name: dest, URL: url, Size: -1, SHA256: sum}}
	if it.kind == specs.KindGetter && fetch.IsGitSource(url) {
		return nil, spec.Errorf(field+".url", "git repositories are not single files; use a go-getter address of one file")
	}
	if sum == "" {
		if !allowUnpinned {
			return nil, spec.Errorf(field+".sha256", "%s has no sha256 pin; add one (or pass --artifact NAME=URL#sha256=HEX, or --allow-unpinned)", url)
		}
		it.unpinned = true
	}
	return it, nil
}

// included reports whether p matches one of the globs (all files when none).
func included(p string, globs []string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, p); ok {
			return true
		}
	}
	return false
}

// fetchAll runs the downloads, jobs at a time. Every file is tried; the
// errors of all failed ones are returned together.
func fetchAll(ctx context.Context, c *fetch.Client, items []*item, jobs int) error {
	// Largest first, so one big file does not start last and finish alone.
	order := append([]*item(nil), items...)
	sort.SliceStable(order, func(a, b int) bool { return order[a].want.Size > order[b].want.Size })
	sem := make(chan struct{}, jobs)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, it := range order {
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fetchOne(ctx, c, it); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

func fetchOne(ctx context.Context, c *fetch.Client, it *item) error {
	var err error
	switch it.kind {
	case specs.KindHF, specs.KindHTTP, specs.KindFile:
		it.digest, err = c.Download(ctx, it.want, it.part)
	case specs.KindGenerated:
		it.digest, err = generate(ctx, it)
	default:
		it.digest, err = getterFetch(ctx, it)
	}
	return err
}

// generate writes a generated file into its part file, hashing it as it is
// written.
func generate(ctx context.Context, it *item) (d fetch.Digest, err error) {
	f, err := os.OpenFile(it.part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return d, err
	}
	pr, pw := io.Pipe()
	go func() {
		werr := it.gen.Write(io.MultiWriter(f, pw))
		pw.CloseWithError(werr)
	}()
	d, err = fetch.HashReader(ctx, pr, 0)
	pr.CloseWithError(errors.New("hashing stopped"))
	err = errors.Join(err, f.Sync(), f.Close())
	if err != nil {
		return d, fmt.Errorf("generate %s: %w", it.dest, err)
	}
	if it.want.SHA256 != "" && d.SHA256 != it.want.SHA256 {
		return d, &fetch.MismatchError{Name: it.dest, URL: it.source, What: "sha256", Want: it.want.SHA256, Got: d.SHA256}
	}
	return d, nil
}

// getterFetch fetches a single file with go-getter, then hashes it (go-getter
// cannot hash while it downloads).
func getterFetch(ctx context.Context, it *item) (fetch.Digest, error) {
	os.Remove(it.part)
	if err := fetch.Get(ctx, it.source, it.part, false); err != nil {
		return fetch.Digest{}, err
	}
	f, err := os.Open(it.part)
	if err != nil {
		return fetch.Digest{}, err
	}
	defer f.Close()
	d, err := fetch.HashReader(ctx, f, 0)
	if err != nil {
		return d, fmt.Errorf("hash %s: %w", it.dest, err)
	}
	if it.want.SHA256 != "" && d.SHA256 != it.want.SHA256 {
		os.Remove(it.part)
		return d, &fetch.MismatchError{Name: it.dest, URL: it.source, What: "sha256", Want: it.want.SHA256, Got: d.SHA256}
	}
	return d, nil
}

// assemble moves the fetched files into stage, writes the SBOM and the signed
// manifest, and checks that stage holds exactly what the manifest lists.
func assemble(ctx context.Context, stage string, spec *specs.Spec, opts CreateOptions, items []*item, meta manifests.Meta, revision string, created time.Time) (*manifests.Manifest, error) {
	var files []manifests.File
	var sfiles []sbomFile
	for _, it := range items {
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
	if err := manifests.WriteFileAtomic(filepath.Join(stage, SBOMFile), sbom, 0o644); err != nil {
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
