package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
	"github.com/qwen-appliance/qwen-appliance/provision/storage"
)

// Options say what to back up and for whom.
type Options struct {
	Root       string          // the installation's root ("/" on a real host)
	Out        string          // the archive to write; it must not exist
	Recipients []age.Recipient // who can decrypt it; at least one
	Key        manifests.PrivateKey
	// IncludeModel adds the bundle's weights and other files; without it
	// the signed bundle re-creates them on restore.
	IncludeModel bool
	// Extra are further members taken at backup time, each a consistent
	// snapshot its producer makes (the knowledge-base database, once it
	// exists, adds itself here).
	Extra []Extra
	// Textfile, when set, is a Prometheus textfile-collector file that a
	// successful backup rewrites with qwen_backup_last_success_timestamp_seconds.
	Textfile string
	Tool     string // the program's version, recorded
	Now      func() time.Time
	Log      io.Writer // progress; discarded when nil
}

// Extra is one additional member, stored as "extra/NAME" with kind "extra".
type Extra struct {
	Name string
	// Open returns a reader of exactly size bytes holding a consistent
	// snapshot; it is closed after copying.
	Open func(ctx context.Context) (r io.ReadCloser, size int64, err error)
}

// source is one member to write: where its bytes come from.
type source struct {
	name, kind string
	path       string   // a file to open, or
	f          *os.File // one already open (the audit log), and
	size       int64    // for f: how much of it to copy (-1: all)
	extra      *Extra
}

// Create writes one age-encrypted archive of the installation under
// o.Root to o.Out, atomically: a failed or cancelled run leaves no file at
// o.Out. It reads while the appliance serves and never stops it. It returns
// the signed manifest.
func Create(ctx context.Context, o Options) (_ *Manifest, err error) {
	if len(o.Recipients) == 0 {
		return nil, errors.New("backup: no recipients: the archive could never be decrypted")
	}
	if o.Out == "" {
		return nil, errors.New("backup: no output file")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, err
	}
	st, err := state.Load(root)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	m := &Manifest{SchemaVersion: SchemaVersion, Created: o.Now().UTC().Truncate(time.Second), Tool: o.Tool, Root: root,
		Bundle: Bundle{Name: st.Bundle.Name, Version: st.Bundle.Version, ManifestSHA256: st.Bundle.ManifestSHA256},
		Store:  st.Store.Dir, IncludesModel: o.IncludeModel}
	m.Host, _ = os.Hostname()
	srcs, head, err := collect(root, st, o)
	defer func() {
		for _, s := range srcs {
			if s.f != nil {
				s.f.Close()
			}
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	m.AuditHead = head

	if _, err := os.Lstat(o.Out); err == nil {
		return nil, fmt.Errorf("backup: %s already exists; choose a new name", o.Out)
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.Out), "."+filepath.Base(o.Out)+".partial-*")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// age writes each 64 KiB chunk on its own; out gathers them, and starts
	// the disk's writeback as it goes so that the final sync has little
	// left to wait for.
	pool := newChunkPool()
	out := newAsyncWriter(&writeback{f: tmp}, pool)
	enc, err := age.Encrypt(out, o.Recipients...)
	if err != nil {
		out.Close()
		return nil, fmt.Errorf("backup: encrypt: %w", err)
	}
	// Reading and hashing (this goroutine and a hasher), encryption
	// (another) and writing (out's) overlap: see chunks.go.
	pr, pw := io.Pipe()
	encDone := make(chan error, 1)
	go func() {
		_, err := io.CopyBuffer(enc, pr, make([]byte, chunkSize))
		pr.CloseWithError(err)
		encDone <- errors.Join(err, enc.Close(), out.Close())
	}()
	encWaited := false
	defer func() {
		if !encWaited { // an error before the end: stop the encryptor first
			pw.CloseWithError(errors.New("backup abandoned"))
			<-encDone
		}
	}()
	bw := bufio.NewWriterSize(pw, chunkSize)
	tw := tar.NewWriter(bw)
	var total int64
	for _, s := range srcs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		mb, err := writeMember(ctx, tw, s, m.Created, pool)
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", s.name, err)
		}
		total += mb.Size
		m.Members = append(m.Members, mb)
	}
	raw, err := Marshal(m)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{ManifestName, raw}, {SignatureName, Sign(raw, o.Key)}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), ModTime: m.Created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	err = errors.Join(tw.Close(), bw.Flush())
	pw.CloseWithError(err)
	encWaited = true
	if err := errors.Join(err, <-encDone); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return nil, fmt.Errorf("backup: write %s: %w", tmp.Name(), err)
	}
	// Link, not rename: it fails rather than replace a file that appeared.
	if err := os.Link(tmp.Name(), o.Out); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	os.Remove(tmp.Name())
	// The archive is complete at o.Out; a directory that cannot be synced
	// only leaves its name less durable, which is not worth failing for.
	_ = atomicfile.SyncDir(filepath.Dir(o.Out))
	fmt.Fprintf(logw, "qwen-appliance: backup: %d members, %d bytes before encryption, audit head seq %d\n", len(m.Members), total, m.AuditHead.Seq)
	if o.Textfile != "" {
		if err := writeTextfile(o.Textfile, o.Now(), total); err != nil {
			return m, fmt.Errorf("backup written to %s, but its metrics file: %w", o.Out, err)
		}
	}
	return m, nil
}

// collect lists the members in archive order: configuration, state, store
// metadata, bundle, extras, then the audit log last, so that the copy of
// its growing current file is taken as late as possible.
func collect(root string, st *state.State, o Options) (srcs []source, head AuditHead, err error) {
	seen := map[string]bool{}
	add := func(kind, path string) error {
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
			return fmt.Errorf("%s is not under the root %s", path, root)
		}
		name := "root/" + filepath.ToSlash(rel)
		if !seen[name] {
			seen[name] = true
			srcs = append(srcs, source{name: name, kind: kind, path: path})
		}
		return nil
	}
	rp := func(p string) string { return filepath.Join(root, p) }
	if err := walkFiles(rp(provision.ConfigDir), nil, func(p string) error { return add(KindConfig, p) }); err != nil {
		return srcs, head, err
	}
	// The state directory, less the store, install's plaintext staging
	// copy and the services' working directory.
	skip := map[string]bool{rp(filepath.Join(provision.StateDir, "incoming")): true, rp(filepath.Join(provision.StateDir, "state")): true}
	if st.Store.Dir != "" {
		skip[filepath.Clean(st.Store.Dir)] = true
	}
	if err := walkFiles(rp(provision.StateDir), skip, func(p string) error { return add(KindState, p) }); err != nil {
		return srcs, head, err
	}
	var files []string
	for p := range st.Files {
		files = append(files, p)
	}
	sort.Strings(files)
	for _, p := range files {
		if p == rp(provision.ProgramPath) {
			continue // install copies this program again
		}
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			if err := add(KindState, p); err != nil {
				return srcs, head, err
			}
		}
	}
	if st.Store.Dir != "" {
		if p := storage.MetadataPath(st.Store.Dir); exists(p) {
			srcs = append(srcs, source{name: "store/" + filepath.Base(p), kind: KindStore, path: p})
		}
	}
	if st.Bundle.Dir != "" {
		for _, n := range []string{manifests.ManifestFile, manifests.SignatureFile} {
			srcs = append(srcs, source{name: "bundle/" + n, kind: KindBundle, path: filepath.Join(st.Bundle.Dir, n)})
		}
		if o.IncludeModel {
			// The files the bundle's manifest lists, and nothing else: the
			// release directory also holds the runtime's own state (its
			// key, unpacked blobs), which install re-creates.
			data, err := os.ReadFile(filepath.Join(st.Bundle.Dir, manifests.ManifestFile))
			if err != nil {
				return srcs, head, err
			}
			bm, err := manifests.Parse(data)
			if err != nil {
				return srcs, head, fmt.Errorf("installed bundle: %w", err)
			}
			for _, f := range bm.Files {
				srcs = append(srcs, source{name: "bundle/" + f.Path, kind: KindModel, path: filepath.Join(st.Bundle.Dir, filepath.FromSlash(f.Path))})
			}
		}
	}
	for i := range o.Extra {
		e := &o.Extra[i]
		if err := manifests.ValidatePath(e.Name); err != nil || e.Open == nil {
			return srcs, head, fmt.Errorf("extra member %q: bad name or no Open", e.Name)
		}
		srcs = append(srcs, source{name: "extra/" + e.Name, kind: KindExtra, extra: e})
	}
	logPath := st.Gateway.AuditLog
	if logPath == "" {
		logPath = rp(filepath.Join(provision.LogDir, "audit.log"))
	}
	afiles, head, err := snapshotAudit(logPath)
	if err != nil {
		return srcs, head, err
	}
	for _, a := range afiles {
		rel, err := filepath.Rel(root, a.path)
		if err != nil || strings.HasPrefix(rel, "..") {
			a.f.Close()
			return srcs, head, fmt.Errorf("audit log %s is not under the root %s", a.path, root)
		}
		srcs = append(srcs, source{name: "root/" + filepath.ToSlash(rel), kind: KindAudit, f: a.f, size: a.size})
		head.Member = "root/" + filepath.ToSlash(rel)
	}
	if len(afiles) == 0 {
		head.Member = ""
	}
	return srcs, head, nil
}

// walkFiles calls fn for every regular file under dir (none when dir does
// not exist), skipping the directories in skip. Symlinks are not followed.
func walkFiles(dir string, skip map[string]bool, fn func(string) error) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == dir {
				return fs.SkipAll
			}
			return err
		}
		if d.IsDir() && skip[filepath.Clean(p)] {
			return fs.SkipDir
		}
		if d.Type().IsRegular() && !strings.Contains(d.Name(), ".partial-") {
			return fn(p)
		}
		return nil
	})
	return err
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// writeMember copies one source into the archive in chunks from pool,
// hashing what it writes.
func writeMember(ctx context.Context, tw *tar.Writer, s source, mtime time.Time, pool *chunkPool) (mb Member, err error) {
	mb = Member{Name: s.name, Kind: s.kind}
	var r io.Reader
	switch {
	case s.extra != nil:
		rc, size, err := s.extra.Open(ctx)
		if err != nil {
			return mb, err
		}
		defer rc.Close()
		r, mb.Size, mb.Mode = rc, size, 0o600
	default:
		f := s.f
		if f == nil {
			var err error
			if f, err = os.Open(s.path); err != nil {
				return mb, err
			}
			defer f.Close()
		}
		fi, err := f.Stat()
		if err != nil {
			return mb, err
		}
		if !fi.Mode().IsRegular() {
			return mb, fmt.Errorf("%s is not a regular file", s.path)
		}
		mb.Size, mb.Mode, mtime = fi.Size(), uint32(fi.Mode().Perm()), fi.ModTime()
		if s.f != nil {
			mb.Size = s.size
		}
		r = io.NewSectionReader(f, 0, mb.Size)
	}
	if err := tw.WriteHeader(&tar.Header{Name: s.name, Mode: int64(mb.Mode), Size: mb.Size, ModTime: mtime, Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return mb, err
	}
	h := newHasher()
	defer func() {
		if sum := h.end(); err == nil {
			mb.SHA256 = sum
		}
	}()
	var n int64
	for {
		c := pool.get()
		k, rerr := fill(r, c.b)
		c.b = c.b[:k]
		n += int64(k)
		if k > 0 {
			h.add(c)
			if _, err := tw.Write(c.b); err != nil {
				c.release()
				return mb, err
			}
		}
		c.release()
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return mb, rerr
		}
	}
	if n != mb.Size {
		return mb, fmt.Errorf("changed while being copied (%d of %d bytes)", n, mb.Size)
	}
	return mb, nil
}
