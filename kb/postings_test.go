package kb

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPostingsRoundTrip builds lists the way loadIndex does (ascending
// numbers, any term frequency) and checks each unpacks to exactly what
// the packed uint32 form holds: the number, and tf capped at 255.
func TestPostingsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var p postings
	want := make([][]uint32, 6)
	for range want {
		p.newTerm()
	}
	// Term 0: every number; 1: sparse; 2: the largest gaps and numbers;
	// 3: frequencies across the cap; 4: numbers 0 and 1 only; 5: empty.
	for n := uint32(0); n < 5000; n++ {
		tf := 1 + r.IntN(3)
		p.add(0, n, tf)
		want[0] = append(want[0], n<<8|uint32(tf))
	}
	for n := uint32(r.IntN(100)); n < maxDense; n += 1 + uint32(r.IntN(1<<20)) {
		p.add(1, n, 1)
		want[1] = append(want[1], n<<8|1)
	}
	for _, n := range []uint32{0, 127, 128, 1<<13 - 1, 1 << 13, 1<<20 + 5, maxDense - 2, maxDense - 1} {
		p.add(2, n, 2)
		want[2] = append(want[2], n<<8|2)
	}
	for i, tf := range []int{1, 2, 254, 255, 256, 65535} {
		n := uint32(i * 1000)
		p.add(3, n, tf)
		want[3] = append(want[3], n<<8|uint32(min(tf, 255)))
	}
	p.add(4, 0, 1)
	p.add(4, 1, 7)
	want[4] = []uint32{0<<8 | 1, 1<<8 | 7}
	p.done()

	var buf []uint32
	for term, w := range want {
		buf = p.unpack(buf[:0], uint32(term))
		if !slices.Equal(buf, w) {
			t.Errorf("term %d: unpacked %d postings, want %d; first difference at %d", term, len(buf), len(w), firstDiff(buf, w))
		}
	}
	// One byte for a gap below 64 with tf 1: the common posting.
	if got := len(p.lists[0]); got > 5000*2 {
		t.Errorf("dense list takes %d bytes for 5000 postings, want at most 2 each", got)
	}
	if got := len(p.lists[4]); got != 3 {
		t.Errorf("list of postings (0, tf 1), (1, tf 7) takes %d bytes, want 3", got)
	}
}

func firstDiff(a, b []uint32) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
