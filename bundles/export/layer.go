package export

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is one regular file of a layer: read from disk (src) or held in
// memory (data), with the SHA-256 its bytes must have.
type entry struct {
	name   string // slash-separated path inside the image, no leading slash
	mode   int64
	size   int64
	sha256 string // hex; the file is refused when its bytes hash otherwise
	src    string // file on disk, or "" for data
	data   []byte
}

// tarLayer is an uncompressed OCI layer written on the fly from entries.
// Its digest is computed once when it is made; every later read hashes the
// stream again and fails at its end if a file changed in between, so a
// layout can never hold a blob under a digest it does not have. Model
// weights do not compress, so layers stay uncompressed: digest and DiffID
// are the same and a file's bytes sit in the blob as they are.
type tarLayer struct {
	entries []entry
	mtime   time.Time
	digest  v1.Hash
	size    int64
}

var _ v1.Layer = (*tarLayer)(nil)

// newTarLayer builds the layer and computes its digest, hashing every file
// against its expected SHA-256 on the way.
func newTarLayer(entries []entry, mtime time.Time) (*tarLayer, error) {
	l := &tarLayer{entries: entries, mtime: mtime.UTC()}
	h := sha256.New()
	n, err := l.writeTo(h)
	if err != nil {
		return nil, err
	}
	l.size = n
	l.digest = v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	return l, nil
}

// writeTo writes the layer's tar stream: the parent directories of each file
// (0755, root-owned) before it, then the file, with a fixed time, owner and
// format so the same files always give the same bytes.
func (l *tarLayer) writeTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	tw := tar.NewWriter(cw)
	dirs := map[string]bool{}
	for _, e := range l.entries {
		var parents []string
		for d := path.Dir(e.name); d != "." && !dirs[d]; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
			dirs[d] = true
		}
		for _, d := range parents {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: l.mtime, Format: tar.FormatPAX}); err != nil {
				return cw.n, fmt.Errorf("layer %s: %w", d, err)
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: e.mode, Size: e.size, ModTime: l.mtime, Format: tar.FormatPAX}); err != nil {
			return cw.n, fmt.Errorf("layer %s: %w", e.name, err)
		}
		if err := copyChecked(tw, e); err != nil {
			return cw.n, err
		}
	}
	if err := tw.Close(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

// ErrChanged is returned when a file's bytes no longer hash to what the
// manifest signed (or a layer's stream to the digest it was given).
var ErrChanged = errors.New("changed since it was verified")

// copyChecked copies e's bytes into w, refusing a file whose size or
// SHA-256 differs from e's.
func copyChecked(w io.Writer, e entry) error {
	var r io.Reader = bytes.NewReader(e.data)
	if e.src != "" {
		f, err := os.Open(e.src)
		if err != nil {
			return fmt.Errorf("layer %s: %w", e.name, err)
		}
		defer f.Close()
		r = f
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(r, e.size+1))
	if err != nil {
		return fmt.Errorf("layer %s: %w", e.name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != e.size || got != e.sha256 {
		return fmt.Errorf("layer %s: %w: %d bytes with sha256 %s, signed %d bytes with sha256 %s", e.name, ErrChanged, n, got, e.size, e.sha256)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func (l *tarLayer) Digest() (v1.Hash, error) { return l.digest, nil }
func (l *tarLayer) DiffID() (v1.Hash, error) { return l.digest, nil }
func (l *tarLayer) Size() (int64, error)     { return l.size, nil }
func (l *tarLayer) MediaType() (types.MediaType, error) {
	return types.OCIUncompressedLayer, nil
}
func (l *tarLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }

// Compressed streams the layer again, failing at the end of the stream when
// its bytes no longer hash to the digest.
func (l *tarLayer) Compressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		h := sha256.New()
		_, err := l.writeTo(io.MultiWriter(pw, h))
		if err == nil {
			if got := hex.EncodeToString(h.Sum(nil)); got != l.digest.Hex {
				err = fmt.Errorf("layer %s: %w: sha256 %s, expected %s", l.digest, ErrChanged, got, l.digest.Hex)
			}
		}
		pw.CloseWithError(err)
	}()
	return pr, nil
}
