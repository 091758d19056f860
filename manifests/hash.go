package manifests

import (
	"context"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	sha256 "github.com/minio/sha256-simd"
)

// blockSize is the unit of reading: large enough for sequential throughput,
// small enough that memory stays flat whatever the file size.
const blockSize = 1 << 20

// Progress is called with the number of bytes just hashed; it may be called
// from several goroutines at once and must be cheap.
type Progress func(n int64)

// HashFile computes the whole-file SHA-256 and the per-chunk SHA-256s of the
// size bytes read from r, in one sequential pass. The whole-file hash runs in
// the reading goroutine and the chunk hashes in a second one, so one large
// file keeps two cores busy while each byte is read once. r may be read
// in parallel by nothing else.
func HashFile(ctx context.Context, r io.Reader, size, chunkSize int64, progress Progress) (sum string, chunks []string, err error) {
	if chunkSize <= 0 {
		return "", nil, fmt.Errorf("chunk size %d is not positive", chunkSize)
	}
	type block struct {
		buf      []byte
		n        int
		chunkEnd bool
	}
	const depth = 4
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, min(blockSize, max(chunkSize, 1)))
	}
	work := make(chan block, depth)
	done := make(chan []string, 1)
	go func() {
		var out []string
		h := sha256.New()
		for b := range work {
			h.Write(b.buf[:b.n])
			free <- b.buf
			if b.chunkEnd {
				out = append(out, hex.EncodeToString(h.Sum(nil)))
				h.Reset()
			}
		}
		done <- out
	}()
	whole := sha256.New()
	readErr := readBlocks(ctx, r, size, chunkSize, free, whole, func(buf []byte, n int, chunkEnd bool) {
		work <- block{buf, n, chunkEnd}
		if progress != nil {
			progress(int64(n))
		}
	})
	close(work)
	chunks = <-done
	if readErr != nil {
		return "", nil, readErr
	}
	return hex.EncodeToString(whole.Sum(nil)), chunks, nil
}

// readBlocks reads exactly size bytes from r in blocks that never straddle a
// chunk boundary, feeding each to whole and handing it to emit, which owns the
// buffer until it returns it to free.
func readBlocks(ctx context.Context, r io.Reader, size, chunkSize int64, free chan []byte, whole hash.Hash, emit func(buf []byte, n int, chunkEnd bool)) error {
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf := <-free
		inChunk := chunkSize - off%chunkSize
		want := min(int64(len(buf)), inChunk, size-off)
		n, err := io.ReadFull(r, buf[:want])
		if err != nil {
			free <- buf
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				return fmt.Errorf("file shrank while hashing: got %d of %d bytes", off+int64(n), size)
			}
			return err
		}
		whole.Write(buf[:n])
		off += int64(n)
		emit(buf, n, off%chunkSize == 0 || off == size)
	}
	// A file that grew while being hashed would give a manifest that lies.
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return fmt.Errorf("file grew while hashing: more than %d bytes", size)
	}
	return nil
}

// hashChunk returns the SHA-256 of n bytes of f from off, read with buf.
func hashChunk(f *os.File, off, n int64, buf []byte, h hash.Hash, progress Progress) (string, error) {
	h.Reset()
	for n > 0 {
		m, err := f.ReadAt(buf[:min(int64(len(buf)), n)], off)
		if m > 0 {
			h.Write(buf[:m])
			off += int64(m)
			n -= int64(m)
			if progress != nil {
				progress(int64(m))
			}
		}
		if err != nil && n > 0 {
			if err == io.EOF {
				return "", fmt.Errorf("file ended at byte %d", off)
			}
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
