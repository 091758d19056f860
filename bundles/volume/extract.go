package volume

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// ArchiveError is an archive entry refused by the reader: an unsafe name or
// type, or a size or order the signed index does not declare. It matches
// manifests.ErrVerification.
type ArchiveError struct {
	Entry  int    // 0-based position in the stream
	Name   string // as written in the archive
	Reason string
}

func (e *ArchiveError) Error() string {
	return fmt.Sprintf("archive entry %d %q refused: %s", e.Entry, e.Name, e.Reason)
}

// Is makes an ArchiveError match manifests.ErrVerification.
func (e *ArchiveError) Is(target error) bool { return target == manifests.ErrVerification }

// readStream reads the tar stream r against the signed index x: each entry
// must be the next one the index lists (same path, at most the listed size,
// a regular file). The manifest (first entry) and its signature (second) are
// checked with v and against the index before any other entry is read; every
// other file is hashed as it streams and compared with the manifest. When
// root is not nil, files are written under it (never outside: os.Root), else
// only checked. It returns the verified manifest.
func readStream(ctx context.Context, r io.Reader, x *Index, v manifests.Verifier, root *os.Root, rep *progress.Reporter) (*manifests.Signed, error) {
	tr := tar.NewReader(r)
	var (
		mdata  []byte
		signed *manifests.Signed
	)
	seen := 0
	for i := 0; ; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &ArchiveError{Entry: i, Reason: "unreadable header: " + err.Error()}
		}
		if err := checkHeader(i, hdr, x); err != nil {
			return nil, err
		}
		e := x.Entries[i]
		switch i {
		case 0:
			if mdata, err = readAll(tr, e.Size); err != nil {
				return nil, &ArchiveError{Entry: i, Name: hdr.Name, Reason: err.Error()}
			}
			sum := sha256.Sum256(mdata)
			if hex.EncodeToString(sum[:]) != x.ManifestSHA256 {
				return nil, fmt.Errorf("%w: the manifest in the volumes is not the one the signed index names", manifests.ErrVerification)
			}
		case 1:
			sdata, err := readAll(tr, e.Size)
			if err != nil {
				return nil, &ArchiveError{Entry: i, Name: hdr.Name, Reason: err.Error()}
			}
			if signed, err = v.Verify(mdata, sdata); err != nil {
				return nil, fmt.Errorf("manifest in the volumes: %w", err)
			}
			if err := matchManifest(x, signed.Manifest); err != nil {
				return nil, err
			}
			if root != nil {
				for j, data := range [][]byte{mdata, sdata} {
					if err := writeSmall(root, x.Entries[j], data); err != nil {
						return nil, err
					}
				}
			}
		default:
			f, _ := signed.Manifest.Lookup(e.Path)
			if err := extractFile(ctx, tr, f, root, rep); err != nil {
				return nil, err
			}
		}
		seen++
	}
	if seen != len(x.Entries) {
		return nil, fmt.Errorf("%w: the archive ends after %d of the %d entries the signed index lists", manifests.ErrVerification, seen, len(x.Entries))
	}
	// Nothing but zero padding may follow the end-of-archive marker.
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return nil, fmt.Errorf("%w: data after the end of the archive", manifests.ErrVerification)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return signed, nil
}

// checkHeader refuses anything but the next regular file of the index.
func checkHeader(i int, hdr *tar.Header, x *Index) error {
	refuse := func(format string, a ...any) error {
		return &ArchiveError{Entry: i, Name: hdr.Name, Reason: fmt.Sprintf(format, a...)}
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeSymlink:
		return refuse("symbolic link (to %q)", hdr.Linkname)
	case tar.TypeLink:
		return refuse("hard link (to %q)", hdr.Linkname)
	case tar.TypeChar, tar.TypeBlock:
		return refuse("device node")
	case tar.TypeFifo:
		return refuse("FIFO")
	case tar.TypeDir:
		return refuse("directory entry (bundles hold only files; directories are implied)")
	default:
		return refuse("entry type %q is not a regular file", hdr.Typeflag)
	}
	if err := manifests.ValidatePath(hdr.Name); err != nil {
		return refuse("unsafe path: %v", err)
	}
	if path.IsAbs(hdr.Name) {
		return refuse("absolute path")
	}
	if i >= len(x.Entries) {
		return refuse("the signed index lists only %d entries", len(x.Entries))
	}
	e := x.Entries[i]
	if hdr.Name != e.Path {
		return refuse("the signed index lists %q at this place", e.Path)
	}
	if hdr.Size != e.Size {
		return refuse("size %d, the signed index says %d", hdr.Size, e.Size)
	}
	if hdr.Mode&^0o777 != 0 {
		return refuse("mode %o has setuid, setgid or sticky bits", hdr.Mode)
	}
	return nil
}

// matchManifest checks that the index's entries are exactly the manifest's
// files, in order, with the same sizes and modes.
func matchManifest(x *Index, m *manifests.Manifest) error {
	if len(x.Entries) != len(m.Files)+2 || x.Name != m.Name || x.Version != m.Version {
		return fmt.Errorf("%w: the signed index and the signed manifest disagree about the files", manifests.ErrVerification)
	}
	for i, f := range m.Files {
		e := x.Entries[i+2]
		if e.Path != f.Path || e.Size != f.Size || e.Mode != f.Mode {
			return fmt.Errorf("%w: index entry %q (%d bytes, %s) differs from the manifest's %q (%d bytes, %s)",
				manifests.ErrVerification, e.Path, e.Size, e.Mode, f.Path, f.Size, f.Mode)
		}
	}
	return nil
}

func readAll(r io.Reader, size int64) ([]byte, error) {
	if size > 64<<20 {
		return nil, errors.New("larger than 64 MiB")
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("truncated: %v", err)
	}
	return b, nil
}

func writeSmall(root *os.Root, e Entry, data []byte) error {
	f, err := root.OpenFile(e.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return errors.Join(f.Chmod(0o644), f.Sync(), f.Close())
}

// extractFile streams one file, hashing it, into root (or nowhere) and
// compares it with the manifest.
func extractFile(ctx context.Context, r io.Reader, f manifests.File, root *os.Root, rep *progress.Reporter) (err error) {
	w := io.Discard
	if root != nil {
		if err := mkdirAll(root, path.Dir(f.Path)); err != nil {
			return fmt.Errorf("extract %s: %w", f.Path, err)
		}
		out, err := root.OpenFile(f.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("extract %s: %w", f.Path, err)
		}
		defer func() {
			if err == nil {
				err = errors.Join(out.Chmod(os.FileMode(f.FileMode())), out.Sync())
			}
			err = errors.Join(err, out.Close())
		}()
		w = out
	}
	rep.Start(f.Path, f.Size, 0)
	err = copyChecked(ctx, w, r, f, rep)
	var me *mismatchError
	if errors.As(err, &me) {
		err = fmt.Errorf("%w: %s: its bytes in the volumes differ from the signed manifest: %v", manifests.ErrVerification, f.Path, err)
	}
	rep.Done(f.Path, err)
	return err
}

func mkdirAll(root *os.Root, dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	if err := mkdirAll(root, path.Dir(dir)); err != nil {
		return err
	}
	err := root.Mkdir(dir, 0o755)
	if errors.Is(err, os.ErrExist) {
		st, serr := root.Lstat(dir)
		if serr != nil || !st.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", dir)
		}
		return nil
	}
	return err
}
