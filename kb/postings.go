package kb

// postings holds one posting list per term, compressed. A list names the
// chunks (or documents) holding the term in ascending order; each posting
// is a varint of gap<<1 | (tf > 1), where gap is the distance from the
// previous number (the first number is its own gap), followed, when
// tf > 1, by one byte of min(tf, 255).
//
// Why: a packed uint32 per posting cost 4 bytes, plus what append left
// spare; most gaps fit in one or two bytes and most terms occur once in a
// 200-character chunk, so a posting here costs 1.5 bytes on average. The
// lists are built in this form as the chunks stream past in ascending
// order (no second copy, so the build's peak memory falls with the index's
// size), and decoded by search one list at a time.
type postings struct {
	lists [][]byte
	last  []uint32 // each list's last number: needed only while building
}

// newTerm adds an empty list and returns its term number.
func (p *postings) newTerm() uint32 {
	n := uint32(len(p.lists))
	p.lists = append(p.lists, nil)
	p.last = append(p.last, 0)
	return n
}

// add appends number n, with term frequency tf, to term t's list. n must
// be larger than any number already on the list.
func (p *postings) add(t, n uint32, tf int) {
	v := (n - p.last[t]) << 1
	p.last[t] = n
	b := p.lists[t]
	if tf > 1 {
		v |= 1
	}
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	b = append(b, byte(v))
	if tf > 1 {
		b = append(b, byte(min(tf, 255)))
	}
	p.lists[t] = b
}

// done drops what only building needs.
func (p *postings) done() { p.last = nil }

// size returns the bytes the lists hold, slack included.
func (p *postings) size() int {
	n := 0
	for _, l := range p.lists {
		n += cap(l)
	}
	return n
}

// split decodes term t's list into buf, which must hold len(p.lists[t])
// values (a posting takes a byte or more), each posting as n<<8 | tf
// (numbers below maxDense fit in the high 24 bits). It returns the
// postings whose number n has ok[owner[n]] (ok[n] when owner is nil), in
// list order, and the others, in reverse order. Search walks a list more than once, so it
// decodes it once, and sorting out what the caller may read while
// decoding spares it a pass.
func (p *postings) split(buf []uint32, t uint32, ok []bool, owner []uint32) (in, out []uint32) {
	l := p.lists[t]
	buf = buf[:len(l)]
	var n uint32
	k, j := 0, len(buf) // in fills buf from the front, out from the back
	for i := 0; i < len(l); {
		v := uint32(l[i])
		i++
		if v >= 0x80 {
			v &= 0x7f
			for s := 7; ; s += 7 {
				b := uint32(l[i])
				i++
				v |= (b & 0x7f) << s
				if b < 0x80 {
					break
				}
			}
		}
		n += v >> 1
		tf := uint32(1)
		if v&1 != 0 {
			tf = uint32(l[i])
			i++
		}
		o := n
		if owner != nil {
			o = owner[n]
		}
		if ok[o] {
			buf[k] = n<<8 | tf
			k++
		} else {
			j--
			buf[j] = n<<8 | tf
		}
	}
	return buf[:k], buf[j:]
}

// longest returns the length in bytes of the longest of the lists of
// terms: no list among them unpacks to more postings.
func (p *postings) longest(terms []uint32) int {
	n := 0
	for _, t := range terms {
		n = max(n, len(p.lists[t]))
	}
	return n
}
