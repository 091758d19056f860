package manifests

import (
	"context"
	"errors"
	"fmt"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/internal/jsonstrict"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Meta is the part of a manifest that describes rather than pins: the model,
// the host requirements, the runtime and the provenance. Bundle specs and the
// --meta file of "manifest create" supply it.
type Meta struct {
	Model        Model        `json:"model"`
	Requirements Requirements `json:"requirements"`
	Runtime      Runtime      `json:"runtime"`
	Provenance   Provenance   `json:"provenance"`
}

// ParseMeta decodes a Meta document strictly (unknown fields are errors).
func ParseMeta(data []byte) (Meta, error) {
	var m Meta
	err := jsonstrict.Decode(data, &m)
	return m, err
}

// CreateOptions are the inputs of Create besides the directory. The same
// options and the same bytes always give the same manifest.
type CreateOptions struct {
	Name      string
	Version   uint64
	Created   time.Time // truncated to the second, in UTC
	Expires   time.Time
	Meta      Meta
	ChunkSize int64 // DefaultChunkSize when 0
	Workers   int   // files hashed at once; GOMAXPROCS when 0
	Progress  Progress
}

// Create hashes every regular file under dir (except an existing manifest and
// signature at its root) and returns the manifest that pins them. Symlinks,
// devices, FIFOs, sockets, unsafe names and setuid/setgid/sticky bits are
// refused, naming each offending path.
func Create(ctx context.Context, dir string, opts CreateOptions) (*Manifest, error) {
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	files, err := scan(dir)
	if err != nil {
		return nil, err
	}
	m := &Manifest{
		SchemaVersion: SchemaVersion,
		Name:          opts.Name,
		Version:       opts.Version,
		Created:       opts.Created.UTC().Truncate(time.Second),
		Expires:       opts.Expires.UTC().Truncate(time.Second),
		Model:         opts.Meta.Model,
		Requirements:  opts.Meta.Requirements,
		Runtime:       opts.Meta.Runtime,
		Provenance:    opts.Meta.Provenance,
		Files:         files,
	}
	// Check the descriptive fields before the long hashing pass.
	probe := *m
	probe.Files = nil
	if err := probe.Validate(); err != nil {
		return nil, fmt.Errorf("create manifest: %w", err)
	}
	// Largest first, so one big file does not start last and finish alone.
	order := make([]int, len(files))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return files[order[a]].Size > files[order[b]].Size })

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range min(opts.Workers, max(len(files), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := hashInto(ctx, dir, &files[i], opts.ChunkSize, opts.Progress); err != nil {
					mu.Lock()
					if first == nil {
						first = err
						cancel()
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, i := range order {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		return nil, fmt.Errorf("create manifest: %w", first)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("create manifest: %w", err)
	}
	return m, nil
}

func hashInto(ctx context.Context, dir string, f *File, chunkSize int64, progress Progress) (err error) {
	fh, err := openInRoot(dir, f.Path)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, fh.Close()) }()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: is %s, not a regular file", f.Path, fileType(st.Mode()))
	}
	if st.Size() != f.Size {
		return fmt.Errorf("%s: size changed from %d to %d while creating the manifest", f.Path, f.Size, st.Size())
	}
	sum, chunks, err := HashFile(ctx, fh, f.Size, chunkSize, progress)
	if err != nil {
		return fmt.Errorf("hash %s: %w", f.Path, err)
	}
	f.SHA256, f.ChunkSize, f.Chunks = sum, chunkSize, chunks
	if f.Chunks == nil {
		f.Chunks = []string{}
	}
	return nil
}

// scan lists the regular files under dir, sorted by path, with size and mode.
func scan(dir string) ([]File, error) {
	dir = filepath.Clean(dir) // WalkDir's paths are clean: "./b/" walks as "b/…"
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("create manifest: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("create manifest: %s is not a directory", dir)
	}
	var files []File
	var bad []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		if rel == ManifestFile || rel == SignatureFile {
			return nil
		}
		if err := ValidatePath(rel); err != nil {
			bad = append(bad, fmt.Sprintf("%q: %v", rel, err))
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		switch {
		case !mode.IsRegular():
			bad = append(bad, fmt.Sprintf("%s: is %s; bundles hold only regular files", rel, fileType(mode)))
		case mode&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0:
			bad = append(bad, fmt.Sprintf("%s: has setuid, setgid or sticky bits", rel))
		default:
			files = append(files, File{Path: rel, Size: info.Size(), Mode: fmt.Sprintf("%04o", mode.Perm())})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("create manifest: %w", err)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("create manifest: refusing %d path(s): %s", len(bad), strings.Join(bad, "; "))
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

// Write signs the canonical encoding of m with each key and writes
// DIR/manifest.json and DIR/manifest.sig, each atomically (temporary file,
// fsync, rename).
func Write(dir string, m *Manifest, keys ...PrivateKey) error {
	return WriteFor(PurposeManifest, dir, m, keys...)
}

// WriteFor is Write for a manifest signed for another purpose (a signed
// verify report, say), so that it can never pass as a bundle manifest.
func WriteFor(purpose, dir string, m *Manifest, keys ...PrivateKey) error {
	if len(keys) == 0 {
		return errors.New("write manifest: no signing key")
	}
	data, err := Marshal(m)
	if err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	var sigs Signatures
	for _, k := range keys {
		sigs.Add(Sign(k, purpose, data))
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ManifestFile), data, 0o644); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, SignatureFile), sigs.Marshal(), 0o644); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// Cosign adds k's signature to the manifest in dir, for k-of-n approval. The
// co-signer's tool first checks that the manifest parses and that every file
// on disk matches it, so nobody co-signs bytes they did not see.
func Cosign(ctx context.Context, dir string, k PrivateKey, opts CheckOptions) (*Manifest, error) {
	data, sigs, err := readSigned(dir)
	if err != nil && !errors.Is(err, ErrUnsigned) {
		return nil, err
	}
	m, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if err := CheckFiles(ctx, dir, m, opts); err != nil {
		return nil, err
	}
	if sigs == nil {
		sigs = &Signatures{}
	}
	sigs.Add(Sign(k, PurposeManifest, data))
	if err := atomicfile.WriteFile(filepath.Join(dir, SignatureFile), sigs.Marshal(), 0o644); err != nil {
		return nil, fmt.Errorf("cosign: %w", err)
	}
	return m, nil
}
