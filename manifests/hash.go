package manifests

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// blockSize is the unit of reading: large enough for sequential throughput,
// small enough that memory stays flat whatever the file size.
const blockSize = 1 << 20

// Progress is called with the number of bytes just hashed; it may be called
// from several goroutines at once and must be cheap.
type Progress func(n int64)

// HashFile computes the SHA-256 and the chunk proofs (see FileHasher) of
// the size bytes read from r, in one pass (see Stream).
func HashFile(ctx context.Context, r io.Reader, size, chunkSize int64, progress Progress) (sum string, chunks []string, err error) {
	if chunkSize <= 0 || chunkSize%64 != 0 {
		return "", nil, fmt.Errorf("chunk size %d is not a positive multiple of 64", chunkSize)
	}
	fh := NewFileHasher(chunkSize)
	if err := Stream(ctx, r, size, fh, progress); err != nil {
		return "", nil, err
	}
	sum, chunks = fh.Sum()
	return sum, chunks, nil
}

// Stream reads exactly size bytes from r and writes them to sink (a
// FileHasher, a StreamCheck), reading in the calling goroutine and writing in
// a second one, so reading one block overlaps hashing the one before. It
// fails when r holds fewer or more than size bytes, or ctx ends; sink's
// errors are returned too. r may be read in parallel by nothing else.
func Stream(ctx context.Context, r io.Reader, size int64, sink io.Writer, progress Progress) error {
	type block struct {
		buf []byte
		n   int
	}
	const depth = 4
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, blockSize)
	}
	work := make(chan block, depth)
	var sinkErr error
	done := make(chan struct{})
	go func() {
		for b := range work {
			if sinkErr == nil {
				_, sinkErr = sink.Write(b.buf[:b.n])
			}
			free <- b.buf
		}
		close(done)
	}()
	readErr := readBlocks(ctx, r, size, free, func(buf []byte, n int) {
		work <- block{buf, n}
		if progress != nil {
			progress(int64(n))
		}
	})
	close(work)
	<-done
	return errors.Join(readErr, sinkErr)
}

// readBlocks reads exactly size bytes from r into buffers from free, handing
// each to emit, which owns the buffer until it returns it to free.
func readBlocks(ctx context.Context, r io.Reader, size int64, free chan []byte, emit func(buf []byte, n int)) error {
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		buf := <-free
		want := min(int64(len(buf)), size-off)
		n, err := io.ReadFull(r, buf[:want])
		if err != nil {
			free <- buf
			if err == io.ErrUnexpectedEOF || err == io.EOF {
				return fmt.Errorf("file shrank while hashing: got %d of %d bytes", off+int64(n), size)
			}
			return err
		}
		off += int64(n)
		emit(buf, n)
	}
	// A file that grew while being hashed would give a manifest that lies.
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return fmt.Errorf("file grew while hashing: more than %d bytes", size)
	}
	return nil
}

// checkChunk reports whether chunk i of file f, read from fh with buf, is
// the signed one.
func checkChunk(fh *os.File, f File, i int, buf []byte, progress Progress) (bool, error) {
	c, err := f.CheckChunk(i)
	if err != nil {
		return false, err
	}
	off, n := f.ChunkRange(i)
	for n > 0 {
		m, err := fh.ReadAt(buf[:min(int64(len(buf)), n)], off)
		if m > 0 {
			c.Write(buf[:m])
			off += int64(m)
			n -= int64(m)
			if progress != nil {
				progress(int64(m))
			}
		}
		if err != nil && n > 0 {
			if err == io.EOF {
				return false, fmt.Errorf("file ended at byte %d", off)
			}
			return false, err
		}
	}
	return c.OK(), nil
}
