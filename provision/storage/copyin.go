package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sync"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// CopyOptions tune CopyIn.
type CopyOptions struct {
	Owner Owner // who owns the copied files and the directories made for them
	// Progress is called with the bytes just copied.
	Progress manifests.Progress
	// Signature is written beside the manifest in the store (the bundle's
	// manifest.sig), so the store can be verified later on its own; nil
	// writes none.
	Signature []byte
}

// CopyIn streams every file m lists from bundleDir into storeDir, hashing
// while writing (each byte is read once): each chunk is checked against its
// signed proof in m (matching chunks prove the whole file), the file is made 0400 (0500 when the manifest lets its owner
// execute it) and owned by
// opts.Owner, synced, and renamed into place only when it matched. The
// manifest itself (m's canonical bytes, with opts.Signature) is written last,
// so its presence in the store means every file was confirmed. m must come
// from a manifests.Verifier. Paths never leave either directory.
//
// It returns a *manifests.FilesError (matching manifests.ErrVerification)
// naming each file whose bytes differ, ErrLocked when the store's key is not
// loaded, and other errors for I/O failures.
func CopyIn(ctx context.Context, bundleDir, storeDir string, m *manifests.Manifest, opts CopyOptions) (err error) {
	canon, err := manifests.Marshal(m)
	if err != nil {
		return fmt.Errorf("copy in: %w", err)
	}
	old := setUmask(0o077)
	defer setUmask(old)
	src, err := os.OpenRoot(bundleDir)
	if err != nil {
		return fmt.Errorf("copy in: %w", err)
	}
	defer src.Close()
	dst, err := os.OpenRoot(storeDir)
	if err != nil {
		return fmt.Errorf("copy in: %w", err)
	}
	defer dst.Close()
	// Whatever was installed before no longer counts until this copy is done.
	for _, name := range []string{manifests.ManifestFile, manifests.SignatureFile} {
		if err := dst.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("copy in: %w", lockedErr(storeDir, err))
		}
	}
	c := copier{src: src, dst: dst, owner: opts.Owner, progress: opts.Progress, synced: map[string]bool{}}
	var problems []manifests.FileProblem
	for _, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := c.file(ctx, f)
		if err != nil {
			return fmt.Errorf("copy in %s: %w", f.Path, lockedErr(storeDir, err))
		}
		problems = append(problems, p...)
	}
	if len(problems) > 0 {
		return &manifests.FilesError{Problems: problems}
	}
	if opts.Signature != nil {
		if err := c.write(manifests.SignatureFile, opts.Signature); err != nil {
			return fmt.Errorf("copy in: %w", err)
		}
	}
	if err := c.write(manifests.ManifestFile, canon); err != nil {
		return fmt.Errorf("copy in: %w", err)
	}
	return c.syncDirs()
}

// lockedErr names a locked fscrypt store (the kernel says ENOKEY).
func lockedErr(dir string, err error) error {
	if isNoKey(err) {
		return fmt.Errorf("%w: %s (unlock it first): %v", ErrLocked, dir, err)
	}
	return err
}

type copier struct {
	src, dst *os.Root
	owner    Owner
	progress manifests.Progress
	synced   map[string]bool // directories written into, synced at the end
}

// file copies one file; a mismatch is returned as problems, not an error.
func (c *copier) file(ctx context.Context, f manifests.File) ([]manifests.FileProblem, error) {
	if err := manifests.ValidatePath(f.Path); err != nil {
		return nil, err
	}
	fi, err := c.src.Lstat(f.Path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return []manifests.FileProblem{{Path: f.Path, Kind: manifests.ProblemMissing, Detail: "missing from the bundle"}}, nil
		}
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return []manifests.FileProblem{{Path: f.Path, Kind: manifests.ProblemType, Detail: "is a " + typeName(fi.Mode()) + " in the bundle, not a regular file"}}, nil
	}
	// Non-blocking: a FIFO swapped in since the Lstat must not hang the
	// copy; the Stat below refuses it.
	in, err := c.src.OpenFile(f.Path, os.O_RDONLY|oNoFollow|oNonblock, 0)
	if err != nil {
		return nil, err
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() || st.Size() != f.Size {
		return []manifests.FileProblem{{Path: f.Path, Kind: manifests.ProblemSize,
			Detail: fmt.Sprintf("size is %d bytes in the bundle, the manifest says %d", st.Size(), f.Size)}}, nil
	}
	dir := path.Dir(f.Path)
	if err := c.mkdirs(dir); err != nil {
		return nil, err
	}
	tmp := path.Join(dir, "."+path.Base(f.Path)+".partial-"+randomSuffix())
	out, err := c.dst.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
	if err != nil {
		return nil, err
	}
	keep := false
	fw := newFlushingWriter(out)
	defer func() {
		fw.finish()
		if !keep {
			out.Close()
			c.dst.Remove(tmp)
		}
	}()
	check := f.StreamCheck()
	err = manifests.Stream(ctx, io.TeeReader(in, fw), f.Size, check, c.progress)
	fw.finish()
	if err != nil {
		return nil, err
	}
	if problems := compare(f, check); len(problems) > 0 {
		return problems, nil
	}
	// 0400, or 0500 for the bundle's executables (the runtime's server).
	if err := out.Chmod(manifests.StoreMode(f)); err != nil {
		return nil, err
	}
	if err := out.Chown(c.owner.UID, c.owner.GID); err != nil {
		return nil, err
	}
	if err := out.Sync(); err != nil {
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	keep = true
	if err := c.dst.Rename(tmp, f.Path); err != nil {
		c.dst.Remove(tmp)
		return nil, err
	}
	c.synced[dir] = true
	return nil, nil
}

// writebackStep is how much is written before writeback of it is started.
const writebackStep = 8 << 20

// flushingWriter writes to f and, every writebackStep bytes, has one of a
// few goroutines start writeback of what was written. On an fscrypt store
// the kernel encrypts during writeback in the calling thread, so this spreads
// the encryption over the cores, overlapping it with reading and hashing
// (cp leaves it all to one flusher thread at sync time), and fsync at the
// end finds little left to do.
type flushingWriter struct {
	f          *os.File
	off, start int64
	ranges     chan [2]int64
	done       chan struct{}
}

func newFlushingWriter(f *os.File) *flushingWriter {
	ranges := make(chan [2]int64, 4)
	w := &flushingWriter{f: f, ranges: ranges, done: make(chan struct{})}
	var wg sync.WaitGroup
	for range max(runtime.NumCPU(), 2) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range ranges { // not w.ranges: finish sets that to nil
				atomicfile.StartWriteback(w.f, r[0], r[1])
			}
		}()
	}
	go func() { wg.Wait(); close(w.done) }()
	return w
}

func (w *flushingWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if w.off-w.start >= writebackStep {
		w.ranges <- [2]int64{w.start, w.off - w.start}
		w.start = w.off
	}
	return n, err
}

// finish waits for the writeback goroutine; call it before closing f.
func (w *flushingWriter) finish() {
	if w.ranges != nil {
		close(w.ranges)
		w.ranges = nil
		<-w.done
	}
}

// compare lists each chunk that differs from the manifest, and the whole
// file when the check failed otherwise.
func compare(f manifests.File, check *manifests.StreamCheck) []manifests.FileProblem {
	var out []manifests.FileProblem
	for _, i := range check.Bad() {
		off, n := f.ChunkRange(i)
		out = append(out, manifests.FileProblem{Path: f.Path, Kind: manifests.ProblemChunk, Chunk: i, Offset: off, Length: n,
			Detail: fmt.Sprintf("bytes %d-%d (chunk %d) differ from the manifest; not installed", off, off+n-1, i)})
	}
	if err := check.Err(); len(out) == 0 && err != nil {
		out = append(out, manifests.FileProblem{Path: f.Path, Kind: manifests.ProblemChunk,
			Detail: err.Error() + "; not installed"})
	}
	return out
}

// mkdirs makes each missing directory of rel with dirMode and the owner.
func (c *copier) mkdirs(rel string) error {
	if rel == "." {
		return nil
	}
	if err := c.mkdirs(path.Dir(rel)); err != nil {
		return err
	}
	err := c.dst.Mkdir(rel, dirMode)
	if errors.Is(err, fs.ErrExist) {
		fi, err := c.dst.Lstat(rel)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s is a %s in the store, not a directory", rel, typeName(fi.Mode()))
		}
		return nil
	}
	if err != nil {
		return err
	}
	c.synced[path.Dir(rel)] = true
	return c.dst.Chown(rel, c.owner.UID, c.owner.GID)
}

// write puts a small file into the store root atomically.
func (c *copier) write(name string, data []byte) error {
	tmp := "." + name + ".partial-" + randomSuffix()
	f, err := c.dst.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(fileMode), f.Chown(c.owner.UID, c.owner.GID), f.Sync(), f.Close())
	if err == nil {
		err = c.dst.Rename(tmp, name)
	}
	if err != nil {
		c.dst.Remove(tmp)
		return err
	}
	c.synced["."] = true
	return nil
}

func (c *copier) syncDirs() error {
	for dir := range c.synced {
		d, err := c.dst.Open(dir)
		if err != nil {
			return err
		}
		if err := errors.Join(d.Sync(), d.Close()); err != nil {
			return fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return nil
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}
