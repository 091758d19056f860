package manifests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxManifestBytes bounds what is read before the signature is checked.
const maxManifestBytes = 64 << 20

// Verifier decides whether a signed manifest is acceptable.
type Verifier struct {
	Trusted   []PublicKey
	Threshold int // signatures by distinct trusted keys needed; 1 when 0
	// MinVersion is the last version accepted on this host; a lower version
	// is refused with ErrRollback (the same version is allowed, to reinstall).
	MinVersion uint64
	// AllowExpired accepts an expired manifest; callers must log that they did.
	AllowExpired bool
	Now          func() time.Time // time.Now when nil
	// Purpose is what the signatures must have been made for;
	// PurposeManifest when empty.
	Purpose string
}

// Signed is a manifest whose signature has been checked.
type Signed struct {
	Manifest *Manifest
	Raw      []byte   // the exact signed bytes of manifest.json
	KeyIDs   []string // trusted keys whose signatures are valid
}

// Open reads DIR/manifest.json and DIR/manifest.sig and verifies them with
// Verify.
func (v Verifier) Open(dir string) (*Signed, error) {
	data, sigs, err := readSigned(dir)
	if err != nil {
		return nil, err
	}
	return v.verify(data, sigs)
}

// Verify checks, in order: the signatures over the exact bytes of data (before
// anything in it is believed), that the bytes are a valid canonical manifest,
// expiry, and rollback. Every refusal matches ErrVerification.
func (v Verifier) Verify(data, sigFile []byte) (*Signed, error) {
	sigs, err := ParseSignatures(sigFile)
	if err != nil {
		if errors.Is(err, ErrUnsigned) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s: %v", ErrUnsigned, SignatureFile, err)
	}
	return v.verify(data, sigs)
}

func (v Verifier) verify(data []byte, sigs *Signatures) (*Signed, error) {
	if len(v.Trusted) == 0 {
		return nil, fmt.Errorf("%w: no trusted public key given", ErrUntrustedKey)
	}
	purpose := v.Purpose
	if purpose == "" {
		purpose = PurposeManifest
	}
	ids, err := Check(sigs, purpose, data, v.Trusted, v.Threshold)
	if err != nil {
		return nil, err
	}
	m, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotCanonical, err)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if t := now(); !v.AllowExpired && t.After(m.Expires) {
		return nil, fmt.Errorf("%w: %s version %d expired at %s (now %s)", ErrExpired, m.Name, m.Version, m.Expires.Format(time.RFC3339), t.UTC().Format(time.RFC3339))
	}
	if m.Version < v.MinVersion {
		return nil, fmt.Errorf("%w: %s version %d is lower than version %d accepted before", ErrRollback, m.Name, m.Version, v.MinVersion)
	}
	return &Signed{Manifest: m, Raw: data, KeyIDs: ids}, nil
}

// readSigned reads the manifest and its signatures without following symlinks
// and with a size bound. A missing signature file gives ErrUnsigned with the
// manifest bytes still returned.
func readSigned(dir string) ([]byte, *Signatures, error) {
	data, err := readBounded(dir, ManifestFile)
	if err != nil {
		return nil, nil, err
	}
	sigData, err := readBounded(dir, SignatureFile)
	if errors.Is(err, fs.ErrNotExist) {
		return data, nil, fmt.Errorf("%w: %s is missing", ErrUnsigned, filepath.Join(dir, SignatureFile))
	}
	if err != nil {
		return nil, nil, err
	}
	sigs, err := ParseSignatures(sigData)
	if err != nil {
		if errors.Is(err, ErrUnsigned) {
			return data, nil, err
		}
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrUnsigned, SignatureFile, err)
	}
	return data, sigs, nil
}

func readBounded(dir, name string) ([]byte, error) {
	f, err := openInRoot(dir, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read: %w", &FileTypeError{Path: filepath.Join(dir, name), Type: fileType(st.Mode())})
	}
	return readAtMost(f, name, maxManifestBytes)
}

// readAtMost reads f to its end, refusing one longer than max bytes.
func readAtMost(f *os.File, name string, max int) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, int64(max)+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(data) > max {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, max)
	}
	return data, nil
}

// CheckOptions tune CheckFiles.
type CheckOptions struct {
	Workers  int // chunks hashed at once; GOMAXPROCS when 0
	Progress Progress
	// Select, when set, chooses which chunks of a file to hash (quick checks
	// sample a few); nil hashes every chunk.
	Select func(f File) []int
	// IgnoreExtra lists extra top-level names that are not problems.
	IgnoreExtra []string
	// StoreModes also accepts the strict modes an encrypted model store
	// gives its copies: 0400, or 0500 where the signed mode lets the owner
	// execute. A stricter copy is never a weaker one.
	StoreModes bool
}

// StoreMode is the mode a model store gives its copy of f.
func StoreMode(f File) os.FileMode {
	if f.FileMode()&0o100 != 0 {
		return 0o500
	}
	return 0o400
}

// CheckFiles compares the files under dir with m: every listed file must be a
// regular file (reached without symlinks) with the recorded size, mode and
// chunk proofs, and nothing else may be there. Chunks are checked in parallel,
// across and within files; since the chunk proofs are signed, matching chunks
// prove the whole file. It returns a *FilesError naming every problem (with
// the byte range of each bad chunk), or another error when it could not run.
func CheckFiles(ctx context.Context, dir string, m *Manifest, opts CheckOptions) error {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		mu       sync.Mutex
		problems []FileProblem
	)
	report := func(p FileProblem) {
		mu.Lock()
		problems = append(problems, p)
		mu.Unlock()
	}
	if err := findExtra(dir, m, opts.IgnoreExtra, report); err != nil {
		return err
	}

	type open struct {
		f       *os.File
		file    File
		pending atomic.Int32
	}
	type job struct {
		o     *open
		chunk int
	}
	release := func(o *open) {
		if o.pending.Add(-1) == 0 {
			o.f.Close()
		}
	}
	jobs := make(chan job, workers*2)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, blockSize)
			for j := range jobs {
				f := j.o.file
				off, n := f.ChunkRange(j.chunk)
				if ctx.Err() == nil {
					ok, err := checkChunk(j.o.f, f, j.chunk, buf, opts.Progress)
					switch {
					case err != nil:
						report(FileProblem{Path: f.Path, Kind: ProblemRead, Chunk: j.chunk, Offset: off, Length: n,
							Detail: fmt.Sprintf("reading bytes %d-%d: %v", off, off+n-1, err)})
					case !ok:
						report(FileProblem{Path: f.Path, Kind: ProblemChunk, Chunk: j.chunk, Offset: off, Length: n,
							Detail: fmt.Sprintf("bytes %d-%d (chunk %d) differ from the manifest", off, off+n-1, j.chunk)})
					}
				}
				release(j.o)
			}
		}()
	}
	for _, f := range m.Files {
		if ctx.Err() != nil {
			break
		}
		fh, problem := openChecked(dir, f, opts.StoreModes)
		if problem != nil {
			report(*problem)
			if problem.Kind != ProblemMode {
				if fh != nil {
					fh.Close()
				}
				continue
			}
		}
		chunks := allChunks(f)
		if opts.Select != nil {
			chunks = opts.Select(f)
		}
		if len(chunks) == 0 {
			fh.Close()
			continue
		}
		o := &open{f: fh, file: f}
		o.pending.Store(int32(len(chunks)))
		for _, c := range chunks {
			jobs <- job{o, c}
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Slice(problems, func(i, j int) bool {
		if problems[i].Path != problems[j].Path {
			return problems[i].Path < problems[j].Path
		}
		if problems[i].Kind != problems[j].Kind {
			return problems[i].Kind < problems[j].Kind
		}
		return problems[i].Chunk < problems[j].Chunk
	})
	return &FilesError{Problems: problems}
}

func allChunks(f File) []int {
	out := make([]int, len(f.Chunks))
	for i := range out {
		out[i] = i
	}
	return out
}

// openChecked opens a listed file and checks type, size and mode. A size
// problem returns no handle (its chunks cannot be compared); a mode problem is
// reported through the returned problem with the handle closed by the caller.
func openChecked(dir string, f File, storeModes bool) (*os.File, *FileProblem) {
	fh, err := openInRoot(dir, f.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &FileProblem{Path: f.Path, Kind: ProblemMissing, Detail: "missing"}
		}
		if fte := (*FileTypeError)(nil); errors.As(err, &fte) {
			return nil, &FileProblem{Path: f.Path, Kind: ProblemType, Detail: fte.Type}
		}
		return nil, &FileProblem{Path: f.Path, Kind: ProblemRead, Detail: err.Error()}
	}
	st, err := fh.Stat()
	if err != nil {
		return fh, &FileProblem{Path: f.Path, Kind: ProblemRead, Detail: err.Error()}
	}
	if !st.Mode().IsRegular() {
		return fh, &FileProblem{Path: f.Path, Kind: ProblemType, Detail: "is " + fileType(st.Mode()) + ", not a regular file"}
	}
	if st.Size() != f.Size {
		return fh, &FileProblem{Path: f.Path, Kind: ProblemSize, Detail: fmt.Sprintf("size is %d bytes, the manifest says %d", st.Size(), f.Size)}
	}
	storeOK := storeModes && st.Mode().Perm() == StoreMode(f)
	if got := fmt.Sprintf("%04o", st.Mode().Perm()); (got != f.Mode && !storeOK) || st.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		// Reported, and the contents are still compared.
		return fh, &FileProblem{Path: f.Path, Kind: ProblemMode, Detail: fmt.Sprintf("mode is %s (%s), the manifest says %s", got, st.Mode(), f.Mode)}
	}
	return fh, nil
}

// findExtra reports files under dir that m does not list, and anything that is
// not a regular file or directory (symlinks, devices, FIFOs, sockets).
func findExtra(dir string, m *Manifest, ignore []string, report func(FileProblem)) error {
	dir = filepath.Clean(dir) // WalkDir's paths are clean: "./b/" walks as "b/…"
	listed := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		listed[f.Path] = true
	}
	skip := map[string]bool{ManifestFile: true, SignatureFile: true}
	for _, n := range ignore {
		skip[n] = true
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("check files: %w", err)
		}
		if p == dir {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		if skip[rel] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		mode := d.Type()
		switch {
		case mode.IsDir():
			return nil
		case mode&fs.ModeSymlink != 0 || !mode.IsRegular():
			if !listed[rel] { // listed ones are reported by openChecked
				report(FileProblem{Path: rel, Kind: ProblemType, Detail: "is " + fileType(mode) + ", which a bundle may not contain"})
			}
		case !listed[rel]:
			report(FileProblem{Path: rel, Kind: ProblemExtra, Detail: "not listed in the manifest"})
		}
		return nil
	})
}
