package kb

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestPostingsRoundTrip builds lists the way loadIndex does (ascending
// numbers, any term frequency) and checks each decodes to exactly what
// the packed uint32 form holds: the number, and tf capped at 255; and that
// split sorts the postings by their owner's ok exactly.
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

	all := make([]bool, maxDense)
	for i := range all {
		all[i] = true
	}
	for term, w := range want {
		buf := make([]uint32, len(p.lists[term]))
		in, out := p.split(buf, uint32(term), all, nil)
		if !slices.Equal(in, w) || len(out) != 0 {
			t.Errorf("term %d: decoded %d postings and %d others, want %d and 0; first difference at %d", term, len(in), len(out), len(w), firstDiff(in, w))
		}
	}

	// Split by owner: postings whose owner is odd are the others.
	owner := make([]uint32, 5000)
	for n := range owner {
		owner[n] = uint32(n / 3)
	}
	odd := make([]bool, len(owner))
	for i := range odd {
		odd[i] = i%2 == 0
	}
	var wantIn, wantOut []uint32
	for _, pk := range want[0] {
		if odd[owner[pk>>8]] {
			wantIn = append(wantIn, pk)
		} else {
			wantOut = append(wantOut, pk)
		}
	}
	slices.Reverse(wantOut)
	in, out := p.split(make([]uint32, len(p.lists[0])), 0, odd, owner)
	if !slices.Equal(in, wantIn) || !slices.Equal(out, wantOut) {
		t.Errorf("split by owner: %d and %d postings, want %d and %d", len(in), len(out), len(wantIn), len(wantOut))
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
