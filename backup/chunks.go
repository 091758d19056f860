package backup

// Creating and extracting an archive run as pipelines, as tar | age and
// age -d | tar -x do, so that on a host with cores to spare the slowest
// step, not the sum of them, sets the pace: reading or decrypting, hashing
// each member, checking the audit chain, encrypting and writing each run on
// their own goroutines and pass chunks of a megabyte between them.

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sync/atomic"
)

// chunk is a piece of a member, or of the archive, on its way between the
// goroutines that read, hash, check, encrypt and write it; the last of them
// to be done with it returns it to its pool.
type chunk struct {
	b    []byte
	refs atomic.Int32
	pool *chunkPool
}

// chunkSize is how much is read, written and hashed at a time, and
// chunkCount how many chunks are on their way at once.
const (
	chunkSize  = 1 << 20
	chunkCount = 24
)

// chunkPool recycles one archive's chunks. Not a sync.Pool: that one may
// drop its buffers at any collection, and every fresh megabyte costs page
// faults.
type chunkPool struct{ free chan *chunk }

func newChunkPool() *chunkPool { return &chunkPool{free: make(chan *chunk, chunkCount+4)} }

// get returns a chunk of chunkSize bytes held once.
func (p *chunkPool) get() *chunk {
	var c *chunk
	select {
	case c = <-p.free:
		c.b = c.b[:chunkSize]
	default:
		c = &chunk{b: make([]byte, chunkSize), pool: p}
	}
	c.refs.Store(1)
	return c
}

func (c *chunk) release() {
	if c.refs.Add(-1) == 0 {
		select {
		case c.pool.free <- c:
		default:
		}
	}
}

// fill reads from r into b until b is full or r ends, and returns what r
// said at its end: io.EOF at a clean end, where io.ReadFull would turn a
// reader's own io.ErrUnexpectedEOF (a tar member cut short) and a clean
// end alike into ErrUnexpectedEOF.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// hasher computes one member's SHA-256 on its own goroutine.
type hasher struct {
	c   chan *chunk
	sum chan string
}

func newHasher() *hasher {
	h := &hasher{c: make(chan *chunk, chunkCount/4), sum: make(chan string, 1)}
	go func() {
		d := sha256.New()
		for c := range h.c {
			d.Write(c.b)
			c.release()
		}
		h.sum <- hex.EncodeToString(d.Sum(nil))
	}()
	return h
}

// add hashes c next; c stays the caller's too.
func (h *hasher) add(c *chunk) {
	c.refs.Add(1)
	h.c <- c
}

// end returns the SHA-256 of what was added, in hex.
func (h *hasher) end() string {
	close(h.c)
	return <-h.sum
}

// asyncWriter writes chunks to w on its own goroutine: those put to it,
// and what Write is given, gathered into chunks from its pool. A write
// error ends the writing; Write reports it from then on, and Close returns
// it.
type asyncWriter struct {
	w    io.Writer
	pool *chunkPool
	cur  *chunk
	n    int // bytes of cur filled
	out  chan *chunk
	done chan struct{}
	err  atomic.Pointer[error]
}

func newAsyncWriter(w io.Writer, pool *chunkPool) *asyncWriter {
	a := &asyncWriter{w: w, pool: pool, out: make(chan *chunk, chunkCount/4), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for c := range a.out {
			if a.err.Load() == nil {
				if _, err := a.w.Write(c.b); err != nil {
					a.err.Store(&err)
				}
			}
			c.release()
		}
	}()
	return a
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	if err := a.err.Load(); err != nil {
		return 0, *err
	}
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur, a.n = a.pool.get(), 0
		}
		k := copy(a.cur.b[a.n:], p)
		a.n += k
		p = p[k:]
		if a.n == len(a.cur.b) {
			a.send()
		}
	}
	return n, nil
}

// put writes c after what came before; the caller's reference to c
// passes to the writer.
func (a *asyncWriter) put(c *chunk) {
	if a.cur != nil {
		a.send()
	}
	a.out <- c
}

func (a *asyncWriter) send() {
	a.cur.b = a.cur.b[:a.n]
	a.out <- a.cur
	a.cur = nil
}

// Close writes what is left and waits for the writing goroutine.
func (a *asyncWriter) Close() error {
	if a.cur != nil {
		a.send()
	}
	close(a.out)
	<-a.done
	if err := a.err.Load(); err != nil {
		return *err
	}
	return nil
}
