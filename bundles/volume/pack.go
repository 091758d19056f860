package volume

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"github.com/qwen-appliance/qwen-appliance/internal/atomicfile"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// PackOptions are the inputs of Pack besides the bundle directory.
type PackOptions struct {
	Out        string // directory for the volumes; must not exist or be empty
	VolumeSize int64  // bytes per data volume; at least 1 MiB
	Parity     int    // Reed-Solomon parity volumes
	Key        manifests.PrivateKey
	Progress   *progress.Reporter
}

// MinVolumeSize is the smallest volume Pack writes (64 KiB).
const MinVolumeSize = 64 << 10

// Pack archives the bundle in dir (manifest.json and manifest.sig first, then
// every file the manifest lists, in order) as one tar stream cut into
// volumes of VolumeSize bytes, adds Parity Reed-Solomon volumes, and writes
// the signed index. Every file is checked against the manifest while it is
// archived (one read); a difference aborts the pack and matches
// manifests.ErrVerification.
func Pack(ctx context.Context, dir string, opts PackOptions) (_ *Index, err error) {
	if opts.VolumeSize < MinVolumeSize {
		return nil, fmt.Errorf("pack: volume size %d is below the minimum of %d bytes", opts.VolumeSize, MinVolumeSize)
	}
	if opts.Key.Key == nil {
		return nil, errors.New("pack: no signing key")
	}
	mdata, err := manifests.ReadFile(dir, manifests.ManifestFile)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	sdata, err := manifests.ReadFile(dir, manifests.SignatureFile)
	if err != nil {
		return nil, fmt.Errorf("pack: %w (sign the bundle first)", err)
	}
	m, err := manifests.Parse(mdata)
	if err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	msum := sha256.Sum256(mdata)
	x := &Index{
		SchemaVersion: IndexSchema, Name: m.Name, Version: m.Version, Created: m.Created,
		ManifestSHA256: hex.EncodeToString(msum[:]), VolumeSize: opts.VolumeSize,
		Entries: []Entry{
			{Path: manifests.ManifestFile, Size: int64(len(mdata)), Mode: "0644"},
			{Path: manifests.SignatureFile, Size: int64(len(sdata)), Mode: "0644"},
		},
	}
	for _, f := range m.Files {
		x.Entries = append(x.Entries, Entry{Path: f.Path, Size: f.Size, Mode: f.Mode})
	}
	est := estimateStream(x.Entries)
	nData := (est + opts.VolumeSize - 1) / opts.VolumeSize
	if int(nData)+opts.Parity > maxVolumes {
		return nil, fmt.Errorf("pack: about %d data volumes and %d parity volumes exceed %d; choose a larger --volume-size", nData, opts.Parity, maxVolumes)
	}
	need := est + int64(opts.Parity)*min(opts.VolumeSize, est)
	if err := makeOut(opts.Out); err != nil {
		return nil, err
	}
	if err := space.Check(opts.Out, need, "the volumes"); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	prefix := Prefix(m.Name, m.Version)
	var written []string
	defer func() {
		if err != nil { // only files this call created
			for _, p := range written {
				os.Remove(p)
			}
		}
	}()
	sw := &splitWriter{dir: opts.Out, prefix: prefix, size: opts.VolumeSize, created: &written}
	opts.Progress.SetTotal(est)
	if err := writeStream(ctx, dir, m, mdata, sdata, x.Entries, sw, opts.Progress); err != nil {
		sw.abort()
		return nil, fmt.Errorf("pack: %w", err)
	}
	if err := sw.close(); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	x.Volumes = sw.volumes
	x.DataVolumes = len(sw.volumes)
	for _, v := range sw.volumes {
		x.StreamSize += v.Size
	}
	if opts.Parity > 0 {
		x.ShardSize = x.Volumes[0].Size
		par, err := encodeParity(ctx, opts.Out, prefix, x, opts.Parity, &written, opts.Progress)
		if err != nil {
			return nil, fmt.Errorf("pack: parity: %w", err)
		}
		x.Volumes = append(x.Volumes, par...)
		x.ParityVolumes = len(par)
	}
	if err := x.validate(); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	data, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return nil, err
	}
	data = append(data, '\n')
	var sigs manifests.Signatures
	sigs.Add(manifests.Sign(opts.Key, PurposeIndex, data))
	idx, sig := filepath.Join(opts.Out, IndexName(prefix)), filepath.Join(opts.Out, IndexSigName(prefix))
	written = append(written, idx, sig)
	if err := atomicfile.WriteFile(sig, sigs.Marshal(), 0o644); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	if err := atomicfile.WriteFile(idx, data, 0o644); err != nil {
		return nil, fmt.Errorf("pack: %w", err)
	}
	return x, nil
}

// estimateStream is the tar stream size of entries, rounded up to leave room
// for PAX headers of long names.
func estimateStream(entries []Entry) int64 {
	n := int64(1024) // end-of-archive blocks
	for _, e := range entries {
		n += 512 + (e.Size+511)/512*512
		if len(e.Path) > 100 {
			n += 1024 + (int64(len(e.Path))+511)/512*512
		}
	}
	return n
}

func makeOut(out string) error {
	if out == "" {
		return errors.New("pack: no output directory")
	}
	if err := space.EmptyOrAbsent(out); err != nil {
		return fmt.Errorf("pack: %w", err)
	}
	return os.MkdirAll(out, 0o755)
}

// writeStream writes the tar stream: the manifest and signature, then every
// file, each hashed as it is archived and compared with the manifest.
func writeStream(ctx context.Context, dir string, m *manifests.Manifest, mdata, sdata []byte, entries []Entry, w io.Writer, rep *progress.Reporter) error {
	tw := tar.NewWriter(w)
	hdr := func(e Entry) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: e.Path, Size: e.Size, Mode: int64(manifests.File{Mode: e.Mode}.FileMode()),
			ModTime: m.Created, Format: tar.FormatPAX}
	}
	for i, data := range [][]byte{mdata, sdata} {
		if err := tw.WriteHeader(hdr(entries[i])); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	for i, f := range m.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := tw.WriteHeader(hdr(entries[i+2])); err != nil {
			return err
		}
		if err := archiveFile(ctx, dir, f, tw, rep); err != nil {
			return err
		}
	}
	return tw.Close()
}

func archiveFile(ctx context.Context, dir string, f manifests.File, tw io.Writer, rep *progress.Reporter) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	fh, err := root.Open(filepath.FromSlash(f.Path))
	if err != nil {
		return err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Size() != f.Size {
		return fmt.Errorf("%w: %s: not a regular file of %d bytes as the manifest says", manifests.ErrVerification, f.Path, f.Size)
	}
	rep.Start(f.Path, f.Size, 0)
	err = copyChecked(ctx, tw, fh, f, rep)
	var me *mismatchError
	if errors.As(err, &me) {
		err = fmt.Errorf("%w: %s: %v; nothing was packed", manifests.ErrVerification, f.Path, err)
	}
	rep.Done(f.Path, err)
	return err
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// splitWriter cuts a stream into data volume files, hashing each as it is
// written.
type splitWriter struct {
	dir, prefix string
	size        int64
	created     *[]string
	volumes     []Volume
	f           *os.File
	h           hash.Hash
	n           int64
}

func (s *splitWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		if s.f == nil || s.n == s.size {
			if err := s.next(); err != nil {
				return total, err
			}
		}
		k := min(int64(len(p)), s.size-s.n)
		m, err := s.f.Write(p[:k])
		s.h.Write(p[:m])
		s.n += int64(m)
		total += m
		if err != nil {
			return total, err
		}
		p = p[k:]
	}
	return total, nil
}

func (s *splitWriter) next() error {
	if err := s.finish(); err != nil {
		return err
	}
	name := DataName(s.prefix, len(s.volumes)+1)
	p := filepath.Join(s.dir, name)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	*s.created = append(*s.created, p)
	s.f, s.h, s.n = f, sha256.New(), 0
	s.volumes = append(s.volumes, Volume{Number: len(s.volumes) + 1, Name: name, Kind: KindData})
	return nil
}

func (s *splitWriter) finish() error {
	if s.f == nil {
		return nil
	}
	v := &s.volumes[len(s.volumes)-1]
	v.Size, v.SHA256 = s.n, hex.EncodeToString(s.h.Sum(nil))
	err := errors.Join(s.f.Sync(), s.f.Close())
	s.f = nil
	return err
}

func (s *splitWriter) close() error { return s.finish() }

func (s *splitWriter) abort() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}
