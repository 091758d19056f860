package manifests

import (
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"

	sha256 "github.com/minio/sha256-simd"
)

// Chunk proofs.
//
// Every file is hashed once, front to back, with SHA-256. Chunk i's proof is
// SHA-256's chaining value (its eight 32-bit state words) after the file's
// first i+1 chunks; the last chunk's proof is the file's SHA-256 itself. One
// pass therefore yields both the digest a model hub advertises and proofs
// that let any chunk be checked alone, in parallel, without reading the rest
// of the file: resume SHA-256 from the proof before it, hash the chunk, and
// compare with its own proof.
//
// Bytes that pass a chunk's check yet differ from the signed ones would give
// a file of the same length and the same SHA-256 as the signed file: a
// second preimage of SHA-256. Chunk sizes are multiples of 4096 bytes, so
// every boundary falls on a SHA-256 block boundary, and the signed file size
// fixes where each chunk starts.

// stateMagic and stateSize describe the marshalled SHA-256 state shared by
// crypto/sha256 and sha256-simd: magic, eight state words, a 64-byte block
// buffer, and the message length so far, big-endian.
const (
	stateMagic = "sha\x03"
	stateSize  = len(stateMagic) + 8*4 + 64 + 8
)

// FileHasher hashes a file written to it in order and yields its SHA-256
// and its chunk proofs.
type FileHasher struct {
	h         hash.Hash
	chunkSize int64
	in        int64 // bytes of the current chunk written
	size      int64
	proofs    []string
}

// NewFileHasher returns a FileHasher for chunkSize-byte chunks (a multiple
// of 64; manifests use multiples of 4096).
func NewFileHasher(chunkSize int64) *FileHasher {
	if chunkSize <= 0 || chunkSize%64 != 0 {
		panic(fmt.Sprintf("manifests: chunk size %d is not a positive multiple of 64", chunkSize))
	}
	return &FileHasher{h: sha256.New(), chunkSize: chunkSize}
}

// Write hashes p. It never fails.
func (f *FileHasher) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		if f.in == f.chunkSize {
			// A chunk ended and the file goes on: its proof is the
			// chaining value. (The last chunk's proof is the digest.)
			f.proofs = append(f.proofs, chainValue(f.h))
			f.in = 0
		}
		k := min(int64(len(p)), f.chunkSize-f.in)
		f.h.Write(p[:k])
		f.in += k
		f.size += k
		p = p[k:]
	}
	return total, nil
}

// Size is the number of bytes written.
func (f *FileHasher) Size() int64 { return f.size }

// Sum returns the SHA-256 of what was written and the chunk proofs (none for
// an empty file). Writing more afterwards continues the file.
func (f *FileHasher) Sum() (sum string, chunks []string) {
	sum = hex.EncodeToString(f.h.Sum(nil))
	chunks = make([]string, 0, len(f.proofs)+1)
	chunks = append(chunks, f.proofs...)
	if f.size > 0 {
		chunks = append(chunks, sum)
	}
	return sum, chunks
}

// chainValue is h's chaining value, in hex: valid at a block boundary.
func chainValue(h hash.Hash) string {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || len(b) != stateSize {
		panic(fmt.Sprintf("manifests: SHA-256 state: %d bytes, %v", len(b), err))
	}
	return hex.EncodeToString(b[len(stateMagic) : len(stateMagic)+32])
}

// ChunkCheck checks one chunk's bytes against its proof; write exactly the
// chunk's bytes to it, then call OK.
type ChunkCheck struct {
	h        hash.Hash
	want     string
	last     bool
	n, bytes int64
}

// CheckChunk returns the check of chunk i of f. It fails only on a
// malformed manifest (an index out of range, a proof that is not hex).
func (f File) CheckChunk(i int) (*ChunkCheck, error) {
	if i < 0 || i >= len(f.Chunks) {
		return nil, fmt.Errorf("%s: no chunk %d (%d chunks)", f.Path, i, len(f.Chunks))
	}
	off, n := f.ChunkRange(i)
	h := sha256.New()
	if i > 0 {
		prev, err := hex.DecodeString(f.Chunks[i-1])
		if err != nil || len(prev) != 32 {
			return nil, fmt.Errorf("%s: chunk %d's proof is not 32 bytes of hex", f.Path, i-1)
		}
		state := make([]byte, 0, stateSize)
		state = append(state, stateMagic...)
		state = append(state, prev...)
		state = append(state, make([]byte, 64)...)
		state = binary.BigEndian.AppendUint64(state, uint64(off))
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
			return nil, fmt.Errorf("%s: resume SHA-256 at chunk %d: %w", f.Path, i, err)
		}
	}
	return &ChunkCheck{h: h, want: f.Chunks[i], last: i == len(f.Chunks)-1, bytes: n}, nil
}

// Write hashes p. It never fails.
func (c *ChunkCheck) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

// OK reports whether exactly the chunk's length was written and the bytes
// are the signed ones.
func (c *ChunkCheck) OK() bool {
	if c.n != c.bytes {
		return false
	}
	if c.last {
		return hex.EncodeToString(c.h.Sum(nil)) == c.want
	}
	return chainValue(c.h) == c.want
}

// StreamCheck checks a file's bytes, written to it in order, chunk by chunk:
// each chunk from its own signed starting proof, so one bad chunk does not
// hide or taint the others. Matching chunks prove the whole file.
type StreamCheck struct {
	f     File
	chunk int
	cur   *ChunkCheck
	in    int64 // bytes of the current chunk written
	n     int64
	bad   []int
	err   error // a malformed proof
}

// StreamCheck returns a check of f's bytes, to be written from the first.
func (f File) StreamCheck() *StreamCheck { return &StreamCheck{f: f} }

// Write checks p. It never fails: bytes beyond the file's size are counted
// and reported by Err.
func (s *StreamCheck) Write(p []byte) (int, error) {
	total := len(p)
	s.n += int64(total)
	for len(p) > 0 && s.chunk < len(s.f.Chunks) {
		if s.cur == nil {
			c, err := s.f.CheckChunk(s.chunk)
			if err != nil {
				s.err = err
				return total, nil
			}
			s.cur = c
		}
		_, size := s.f.ChunkRange(s.chunk)
		k := min(int64(len(p)), size-s.in)
		s.cur.Write(p[:k])
		p = p[k:]
		s.in += k
		if s.in == size {
			if !s.cur.OK() {
				s.bad = append(s.bad, s.chunk)
			}
			s.cur, s.in = nil, 0
			s.chunk++
		}
	}
	return total, nil
}

// Bad lists the chunks that differ from the signed ones (so far).
func (s *StreamCheck) Bad() []int { return s.bad }

// Err is nil when exactly the file's bytes were written; otherwise it names
// the first chunk that differs (with its byte range), or says the bytes
// were too few or too many.
func (s *StreamCheck) Err() error {
	switch {
	case s.err != nil:
		return s.err
	case len(s.bad) > 0:
		off, n := s.f.ChunkRange(s.bad[0])
		return fmt.Errorf("bytes %d-%d (chunk %d) differ", off, off+n-1, s.bad[0])
	case s.n < s.f.Size:
		return fmt.Errorf("shorter than the %d bytes the manifest says", s.f.Size)
	case s.n > s.f.Size:
		return fmt.Errorf("longer than the %d bytes the manifest says", s.f.Size)
	}
	return nil
}
