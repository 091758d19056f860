package volume

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/bundles/space"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// UnpackOptions are the inputs of Unpack besides the volume directory.
type UnpackOptions struct {
	Out      string             // the bundle directory to create; must not exist or be empty
	Verifier manifests.Verifier // trusted keys for the index and the manifest
	Progress *progress.Reporter
}

// Report says what unpacking or verifying volumes found and did.
type Report struct {
	Name     string    `json:"name"`
	Version  uint64    `json:"version"`
	Volumes  int       `json:"volumes"`
	Parity   int       `json:"parityVolumes"`
	Rebuilt  []int     `json:"rebuilt,omitempty"`
	Problems []Problem `json:"problems,omitempty"`
	Files    int       `json:"files"`
	Bytes    int64     `json:"bytes"`
	Dir      string    `json:"dir,omitempty"`
	KeyIDs   []string  `json:"keyIds"`
	// Signed is the verified manifest read from the stream.
	Signed *manifests.Signed `json:"-"`
}

// Unpack checks the signed index and every volume in dir, rebuilds missing
// or corrupt volumes from parity when it can, then streams the archive into
// a temporary directory next to opts.Out, checking every entry against the
// index and every file against the signed manifest, and renames it to
// opts.Out only when all of it matched. The source volumes are only read.
// Refusals match manifests.ErrVerification (*VolumesError, *ArchiveError).
func Unpack(ctx context.Context, dir string, opts UnpackOptions) (*Report, error) {
	return run(ctx, dir, opts.Out, opts.Verifier, opts.Progress)
}

// Verify does everything Unpack does except writing: the index signature,
// every volume's hash, and every file in the stream against the signed
// manifest. Damaged volumes are a *VolumesError saying whether parity could
// rebuild them; nothing is rebuilt.
func Verify(ctx context.Context, dir string, v manifests.Verifier, rep *progress.Reporter) (*Report, error) {
	return run(ctx, dir, "", v, rep)
}

func run(ctx context.Context, dir, out string, v manifests.Verifier, rep *progress.Reporter) (_ *Report, err error) {
	if len(v.Trusted) == 0 {
		return nil, fmt.Errorf("%w: no trusted public key given", manifests.ErrUntrustedKey)
	}
	x, _, err := OpenIndex(dir, v.Trusted)
	if err != nil {
		return nil, err
	}
	r := &Report{Name: x.Name, Version: x.Version, Volumes: x.DataVolumes, Parity: x.ParityVolumes}
	var parent, stage string
	if out != "" {
		if out, err = filepath.Abs(out); err != nil {
			return nil, err
		}
		if err := space.EmptyOrAbsent(out); err != nil {
			return nil, err
		}
		parent = filepath.Dir(out)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, err
		}
		if err := space.Check(parent, x.ContentSize(), "the unpacked bundle"); err != nil {
			return nil, err
		}
	}
	s, err := Check(ctx, dir, x, rep)
	if err != nil {
		return nil, err
	}
	r.Problems = s.Problems
	if len(s.Missing) > 0 {
		verr := &VolumesError{Problems: s.Problems, Missing: len(s.Missing), Parity: x.ParityVolumes, Rebuildable: len(s.Missing) <= x.ParityVolumes}
		if out == "" || !verr.Rebuildable {
			return r, verr
		}
		var need int64
		for _, n := range s.Missing {
			need += x.Volumes[n-1].Size
		}
		if err := space.Check(parent, need+x.ContentSize(), "rebuilt volumes and the unpacked bundle"); err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp(parent, "."+filepath.Base(out)+".rebuild-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp) // our rebuilt copies only, never the sources
		rebuilt, err := rebuild(ctx, x, s.Found, s.Missing, tmp, rep)
		if err != nil {
			return r, fmt.Errorf("rebuild from parity: %w", err)
		}
		for n, p := range rebuilt {
			s.Found[n] = p
			r.Rebuilt = append(r.Rebuilt, n)
		}
		sort.Ints(r.Rebuilt)
	}
	var root *os.Root
	if out != "" {
		stage, err = os.MkdirTemp(parent, "."+filepath.Base(out)+".unpack-")
		if err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				os.RemoveAll(stage) // our own temporary directory
			}
		}()
		if root, err = os.OpenRoot(stage); err != nil {
			return nil, err
		}
		defer root.Close()
	}
	stream, closeAll, err := openStream(x, s.Found)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	rep.SetTotal(x.StreamSize)
	signed, err := readStream(ctx, stream, x, v, root, rep)
	if err != nil {
		return r, err
	}
	r.Files, r.Bytes, r.KeyIDs, r.Signed = len(signed.Manifest.Files), signed.Manifest.TotalSize(), signed.KeyIDs, signed
	if out == "" {
		return r, nil
	}
	if err := os.Chmod(stage, 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(out); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err := os.Rename(stage, out); err != nil {
		return nil, err
	}
	r.Dir = out
	return r, nil
}

// openStream concatenates the data volumes, each cut to its indexed size.
func openStream(x *Index, found map[int]string) (io.Reader, func(), error) {
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	var rs []io.Reader
	for n := 1; n <= x.DataVolumes; n++ {
		f, err := manifests.OpenMedia(found[n])
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		files = append(files, f)
		rs = append(rs, io.LimitReader(f, x.Volumes[n-1].Size))
	}
	return io.MultiReader(rs...), closeAll, nil
}

// Info is what inspecting packed volumes shows without unpacking them.
type Info struct {
	Index    *Index              `json:"index"`
	Verified bool                `json:"indexSignatureVerified"`
	Manifest *manifests.Manifest `json:"manifest,omitempty"`
	Present  []int               `json:"present"` // volumes found under their own names (not hashed)
}

// Inspect reads the index (checking its signature when trusted keys are
// given) and the manifest at the head of the first volume. It reads a few
// kilobytes, hashes nothing, and says which volume files are present.
func Inspect(dir string, trusted []manifests.PublicKey) (*Info, error) {
	x, verified, err := OpenIndex(dir, trusted)
	if err != nil {
		return nil, err
	}
	info := &Info{Index: x, Verified: verified}
	found := map[int]string{}
	for _, v := range x.Volumes {
		if st, err := os.Stat(filepath.Join(dir, v.Name)); err == nil && st.Mode().IsRegular() && st.Size() == v.Size {
			info.Present = append(info.Present, v.Number)
			found[v.Number] = filepath.Join(dir, v.Name)
		}
	}
	if found[1] == "" {
		return info, nil
	}
	f, err := manifests.OpenMedia(found[1])
	if err != nil {
		return info, nil
	}
	defer f.Close()
	tr := tar.NewReader(io.LimitReader(f, x.Volumes[0].Size))
	if hdr, err := tr.Next(); err == nil && hdr.Name == manifests.ManifestFile && hdr.Size == x.Entries[0].Size {
		if data, err := readAll(tr, hdr.Size); err == nil {
			sum := sha256.Sum256(data)
			// Only the manifest the index names; signed when the index is.
			if m, err := manifests.Parse(data); err == nil && hex.EncodeToString(sum[:]) == x.ManifestSHA256 {
				info.Manifest = m
			}
		}
	}
	return info, nil
}
