package manifests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestFileHasherSplits: however the bytes arrive, the digest is
// crypto/sha256's and every chunk (of files ending inside a chunk, exactly
// on a boundary, or empty) checks alone.
func TestFileHasherSplits(t *testing.T) {
	const cs = 4096
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 63, 64, cs - 1, cs, cs + 1, 3 * cs, 3*cs + 100} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		fh := NewFileHasher(cs)
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(2*cs))
			fh.Write(rest[:k])
			rest = rest[k:]
		}
		sum, chunks := fh.Sum()
		if want := sha256.Sum256(data); sum != hex.EncodeToString(want[:]) {
			t.Fatalf("size %d: digest differs from crypto/sha256", size)
		}
		if len(chunks) != chunkCount(int64(size), cs) {
			t.Fatalf("size %d: %d chunks", size, len(chunks))
		}
		f := File{Path: "f", Size: int64(size), Mode: "0644", SHA256: sum, ChunkSize: cs, Chunks: chunks}
		for i := range chunks {
			off, n := f.ChunkRange(i)
			c, err := f.CheckChunk(i)
			if err != nil {
				t.Fatal(err)
			}
			c.Write(data[off : off+n])
			if !c.OK() {
				t.Errorf("size %d chunk %d does not check", size, i)
			}
			c, _ = f.CheckChunk(i)
			c.Write(data[off : off+n-1]) // one byte short
			if c.OK() {
				t.Errorf("size %d chunk %d checks one byte short", size, i)
			}
		}
		// A chunk's bytes do not check in another chunk's place.
		if len(chunks) > 2 {
			c, _ := f.CheckChunk(1)
			c.Write(data[2*cs : 3*cs])
			if c.OK() && !bytes.Equal(data[cs:2*cs], data[2*cs:3*cs]) {
				t.Errorf("size %d: chunk 2's bytes check as chunk 1", size)
			}
		}
	}
}

func TestValidateChunkProofs(t *testing.T) {
	m, err := Create(context.Background(), makeTree(t), createOpts())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(m.Files, func(f File) bool { return len(f.Chunks) > 2 })
	if i < 0 {
		t.Fatal("no file of three chunks or more in the test tree")
	}
	f := &m.Files[i]
	last := len(f.Chunks) - 1
	f.Chunks[last] = f.Chunks[0]
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "last chunk's proof must be the file's sha256") {
		t.Errorf("a last proof that is not the digest: %v", err)
	}
	f.Chunks[last] = f.SHA256
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	m.SchemaVersion = 1
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "create the bundle again") {
		t.Errorf("schema 1: %v", err)
	}
	if _, err := f.CheckChunk(last + 1); err == nil {
		t.Error("CheckChunk accepted an index past the end")
	}
}
