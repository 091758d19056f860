package fetch

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	"github.com/qwen-appliance/qwen-appliance/manifests"
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

// bufSize is the unit of receiving, writing and hashing. Small enough that
// a buffer the kernel has just filled is still in the core's cache when it
// is written to the file and hashed: with 1 MiB buffers each byte crossed
// main memory three times, and the kernel's time per byte was twice curl's.
const bufSize = 128 << 10

// block is one buffer travelling from the reader to the hashing goroutines
// and back to the pool.
type block struct {
	buf  []byte
	n    int
	refs atomic.Int32
}

// hasher computes a stream's SHA-256 and chunk proofs in one pass
// (manifests.FileHasher) in a goroutine of its own, and the git blob SHA-1
// in a second one when wanted, so hashing keeps pace with the network while
// the reader only reads. Buffers come from and go back to a small pool:
// memory stays flat whatever the file size.
type hasher struct {
	chunkSize int64
	free      chan *block
	sha       chan *block
	git       chan *block // nil unless the git blob ID is wanted
	wg        sync.WaitGroup
	size      int64
	file      *manifests.FileHasher
	gitSum    hash.Hash
}

// newHasher starts hashing goroutines; gitSize ≥ 0 also computes the git
// blob ID of a file of that size.
func newHasher(chunkSize, gitSize int64) *hasher {
	const depth = 32 // 4 MiB in flight
	h := &hasher{
		chunkSize: chunkSize,
		free:      make(chan *block, depth),
		sha:       make(chan *block, depth),
		file:      manifests.NewFileHasher(chunkSize),
	}
	for range depth {
		h.free <- &block{buf: make([]byte, bufSize)}
	}
	h.consume(h.sha, h.file)
	if gitSize >= 0 {
		h.gitSum = sha1.New()
		fmt.Fprintf(h.gitSum, "blob %d\x00", gitSize)
		h.git = make(chan *block, depth)
		h.consume(h.git, h.gitSum)
	}
	return h
}

// consume starts a goroutine that writes every block from ch to w and
// gives the block back.
func (h *hasher) consume(ch chan *block, w io.Writer) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for b := range ch {
			w.Write(b.buf[:b.n])
			h.put(b)
		}
	}()
}

func (h *hasher) put(b *block) {
	if b.refs.Add(-1) == 0 {
		h.free <- b
	}
}

// get returns a free block to read into.
func (h *hasher) get() *block { return <-h.free }

// submit hands b, filled with b.n bytes and not touched again by the caller,
// to the hashing goroutines.
func (h *hasher) submit(b *block) {
	if b.n == 0 {
		h.free <- b
		return
	}
	h.size += int64(b.n)
	if h.git == nil {
		b.refs.Store(1)
		h.sha <- b
		return
	}
	b.refs.Store(2)
	h.sha <- b
	h.git <- b
}

// abandon returns an unused block to the pool.
func (h *hasher) abandon(b *block) { h.free <- b }

// finish waits for hashing to end and returns the digest. The hasher cannot
// be used afterwards.
func (h *hasher) finish() Digest {
	close(h.sha)
	if h.git != nil {
		close(h.git)
	}
	h.wg.Wait()
	sum, chunks := h.file.Sum()
	d := Digest{Size: h.size, SHA256: sum, ChunkSize: h.chunkSize, Chunks: chunks}
	if h.gitSum != nil {
		d.GitSHA1 = hex.EncodeToString(h.gitSum.Sum(nil))
	}
	return d
}
