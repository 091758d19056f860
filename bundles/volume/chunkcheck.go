package volume

import (
	"context"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	sha256 "github.com/minio/sha256-simd"

	"github.com/qwen-appliance/qwen-appliance/bundles/progress"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// chunkChecker compares a file's bytes with the manifest's signed chunk
// hashes as they pass. Matching signed chunks prove the whole file, so one
// hash pass is enough (the whole-file SHA-256 is not recomputed).
type chunkChecker struct {
	f       manifests.File
	h       hash.Hash
	chunk   int
	inChunk int64
	bad     int // first bad chunk + 1, 0 when none
}

func newChunkChecker(f manifests.File) *chunkChecker {
	return &chunkChecker{f: f, h: sha256.New()}
}

func (c *chunkChecker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.chunk >= len(c.f.Chunks) {
			return 0, fmt.Errorf("%s: longer than the %d bytes the manifest says", c.f.Path, c.f.Size)
		}
		_, size := c.f.ChunkRange(c.chunk)
		k := min(int64(len(p)), size-c.inChunk)
		c.h.Write(p[:k])
		p = p[k:]
		c.inChunk += k
		if c.inChunk == size {
			if hex.EncodeToString(c.h.Sum(nil)) != c.f.Chunks[c.chunk] && c.bad == 0 {
				c.bad = c.chunk + 1
			}
			c.h.Reset()
			c.chunk++
			c.inChunk = 0
		}
	}
	return n, nil
}

// result reports a difference, naming the first bad chunk's byte range.
func (c *chunkChecker) result() error {
	if c.bad > 0 {
		off, n := c.f.ChunkRange(c.bad - 1)
		return fmt.Errorf("bytes %d-%d (chunk %d) differ", off, off+n-1, c.bad-1)
	}
	if c.chunk != len(c.f.Chunks) || c.inChunk != 0 {
		return fmt.Errorf("shorter than the %d bytes the manifest says", c.f.Size)
	}
	return nil
}

// copyChecked copies exactly f.Size bytes from r to w, checking them against
// f's chunk hashes, with progress and cancellation. Bytes that differ, or a
// source that ends early, are a *mismatchError; failing to write is not.
func copyChecked(ctx context.Context, w io.Writer, r io.Reader, f manifests.File, rep *progress.Reporter) error {
	c := newChunkChecker(f)
	buf := make([]byte, 1<<20)
	var done int64
	for done < f.Size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), f.Size-done)])
		if n > 0 {
			c.Write(buf[:n])
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			done += int64(n)
			rep.Add(f.Path, int64(n))
		}
		if err != nil {
			return &mismatchError{fmt.Sprintf("ended after %d of %d bytes: %v", done, f.Size, err)}
		}
	}
	if err := c.result(); err != nil {
		return &mismatchError{err.Error()}
	}
	return nil
}

type mismatchError struct{ msg string }

func (e *mismatchError) Error() string { return e.msg }
