package fetch

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"

	sha256 "github.com/minio/sha256-simd"
)

// Digest is what hashing a file while it arrives yields: enough to pin it in
// a manifest without reading it again.
type Digest struct {
	Size      int64
	SHA256    string
	ChunkSize int64
	Chunks    []string
	GitSHA1   string // git blob ID, when asked for
}

const bufSize = 1 << 20

// block is one buffer travelling from the reader to both hashing goroutines
// and back to the pool.
type block struct {
	buf  []byte
	n    int
	refs atomic.Int32
}

// hasher computes the whole-file SHA-256 and the per-chunk SHA-256s of a
// stream in two goroutines (and the git blob SHA-1 when wanted), so hashing
// keeps pace with the network on two cores. Buffers come from and go back to
// a small pool: memory stays flat whatever the file size.
type hasher struct {
	chunkSize int64
	free      chan *block
	whole     chan *block
	chunks    chan *block
	wg        sync.WaitGroup
	size      int64
	wholeSum  hash.Hash
	gitSum    hash.Hash
	chunkOut  []string
}

// newHasher starts hashing goroutines; gitSize ≥ 0 also computes the git
// blob ID of a file of that size.
func newHasher(chunkSize, gitSize int64) *hasher {
	const depth = 8
	h := &hasher{
		chunkSize: chunkSize,
		free:      make(chan *block, depth),
		whole:     make(chan *block, depth),
		chunks:    make(chan *block, depth),
		wholeSum:  sha256.New(),
	}
	if gitSize >= 0 {
		h.gitSum = sha1.New()
		fmt.Fprintf(h.gitSum, "blob %d\x00", gitSize)
	}
	for range depth {
		h.free <- &block{buf: make([]byte, bufSize)}
	}
	h.wg.Add(2)
	go func() {
		defer h.wg.Done()
		for b := range h.whole {
			h.wholeSum.Write(b.buf[:b.n])
			if h.gitSum != nil {
				h.gitSum.Write(b.buf[:b.n])
			}
			h.put(b)
		}
	}()
	go func() {
		defer h.wg.Done()
		c := sha256.New()
		var inChunk int64
		for b := range h.chunks {
			p := b.buf[:b.n]
			for len(p) > 0 {
				n := min(int64(len(p)), h.chunkSize-inChunk)
				c.Write(p[:n])
				p = p[n:]
				inChunk += n
				if inChunk == h.chunkSize {
					h.chunkOut = append(h.chunkOut, hex.EncodeToString(c.Sum(nil)))
					c.Reset()
					inChunk = 0
				}
			}
			h.put(b)
		}
		if inChunk > 0 {
			h.chunkOut = append(h.chunkOut, hex.EncodeToString(c.Sum(nil)))
		}
	}()
	return h
}

func (h *hasher) put(b *block) {
	if b.refs.Add(-1) == 0 {
		h.free <- b
	}
}

// get returns a free block to read into.
func (h *hasher) get() *block { return <-h.free }

// submit hands b, filled with b.n bytes and not touched again by the caller,
// to both hashing goroutines.
func (h *hasher) submit(b *block) {
	if b.n == 0 {
		h.free <- b
		return
	}
	h.size += int64(b.n)
	b.refs.Store(2)
	h.whole <- b
	h.chunks <- b
}

// abandon returns an unused block to the pool.
func (h *hasher) abandon(b *block) { h.free <- b }

// finish waits for hashing to end and returns the digest. The hasher cannot
// be used afterwards.
func (h *hasher) finish() Digest {
	close(h.whole)
	close(h.chunks)
	h.wg.Wait()
	d := Digest{Size: h.size, SHA256: hex.EncodeToString(h.wholeSum.Sum(nil)), ChunkSize: h.chunkSize, Chunks: h.chunkOut}
	if d.Chunks == nil {
		d.Chunks = []string{}
	}
	if h.gitSum != nil {
		d.GitSHA1 = hex.EncodeToString(h.gitSum.Sum(nil))
	}
	return d
}
