package audit

import (
	"bytes"
	"crypto/sha256"
	"runtime"
	"sync"
)

// Lines a trusted signature covers skip the canonical-form check.
//
// The chain hash is over each line's raw bytes, and each line's bytes hold
// its prev. A checkpoint (or stop) signed by a key in VerifyOptions.Trusted
// authenticates its own prev, which is the hash of the line before it: that
// authenticates that line's bytes, its prev included, which authenticates
// the line before, and so on back to the previous verified checkpoint. So
// every line before a trusted, verified checkpoint is byte for byte what the
// key holder wrote, and decoding and re-encoding it (most of what verifying
// a line costs) adds nothing. For such request lines the verifier reads
// seq and prev from the fixed places appendRequest writes them (scanRequest)
// and hashes and links the raw bytes; any deterministic reading would do:
// had the bytes been altered, the hash links would break at the latest at
// the checkpoint.
//
// A request line read that way is held back (pending) until a trusted
// checkpoint verifies after it; lines still pending at the end of the file,
// or when any line fails, or when more than maxPendingLines or
// maxPendingBytes are held, get the full check then, before the failure is
// reported, so an error in the unsigned tail, or ahead of a failure, is
// reported as it was without the shortcut (same line, same reason). Without
// Trusted keys (a log checked against its own keys, or --no-trust) every
// line gets the full check at once, and so do the rare kinds other than
// request, whose fields the verifier reads (the checkpoint itself among
// them). FuzzVerifyTrusted holds the two ways to the same result and the
// same error on any input.

// Bounds on the lines held back: past either they are checked at once, so
// memory stays bounded whatever the log does between checkpoints.
const (
	maxPendingLines = 4096
	maxPendingBytes = 16 << 20
)

// hexHash is the length of a chain hash in hex.
const hexHash = 2 * sha256.Size

// requestHead and the rest are the fixed text appendRequest (and
// json.Marshal, whose field order it follows) writes around seq, time and
// prev.
var (
	requestHead = []byte(`{"seq":`)
	requestKind = []byte(`,"kind":"request","time":"`)
	requestPrev = []byte(`","prev":"`)
)

// scanRequest reads seq and prev out of a line shaped like a request record
// as the gateway writes it: {"seq":N,"kind":"request","time":"T","prev":"P"…}
// with N at most 18 digits without a leading zero and P 64 lowercase hex
// digits. ok is false for any other shape, which then takes the full check.
// It checks nothing else: see the comment at the top of this file.
func scanRequest(line []byte) (seq int64, prev [hexHash]byte, ok bool) {
	p, ok := bytes.CutPrefix(line, requestHead)
	if !ok || len(line) == 0 || line[len(line)-1] != '}' {
		return 0, prev, false
	}
	i := 0
	for ; i < len(p) && i < 18 && '0' <= p[i] && p[i] <= '9'; i++ {
		seq = seq*10 + int64(p[i]-'0')
	}
	if i == 0 || (i > 1 && p[0] == '0') {
		return 0, prev, false
	}
	if p, ok = bytes.CutPrefix(p[i:], requestKind); !ok {
		return 0, prev, false
	}
	j := bytes.IndexByte(p, '"')
	if j < 0 {
		return 0, prev, false
	}
	if p, ok = bytes.CutPrefix(p[j:], requestPrev); !ok || len(p) < hexHash+1 || p[hexHash] != '"' {
		return 0, prev, false
	}
	// One table lookup a byte and one test at the end: a comparison a
	// byte mispredicts on random hex and was most of this function's time.
	var notHex byte
	for _, c := range p[:hexHash] {
		notHex |= notLowerHex[c]
	}
	if notHex != 0 {
		return 0, prev, false
	}
	copy(prev[:], p)
	return seq, prev, true
}

// notLowerHex is 1 for every byte that is not a lowercase hex digit.
var notLowerHex = func() (t [256]byte) {
	for c := range t {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			t[c] = 1
		}
	}
	return t
}()

// pendingLines are request lines linked on scanRequest's reading and not
// covered by a trusted checkpoint yet, copied out of their block.
type pendingLines struct {
	data  []byte
	lines []pendingLine
}

type pendingLine struct {
	n   int // line number in the file
	end int // where the line ends in data; it starts where the one before ends
}

func (p *pendingLines) add(n int, line []byte) {
	p.data = append(p.data, line...)
	p.lines = append(p.lines, pendingLine{n, len(p.data)})
}

func (p *pendingLines) full() bool {
	return len(p.lines) > maxPendingLines || len(p.data) > maxPendingBytes
}

// reset drops the lines: a trusted checkpoint covers them, or they were
// checked.
func (p *pendingLines) reset() {
	p.data, p.lines = p.data[:0], p.lines[:0]
}

// check gives every pending line the full check, on parallel goroutines
// when there are many, and returns the first failing one's error in file
// order; it empties p either way.
func (p *pendingLines) check(name string) error {
	defer p.reset()
	if len(p.lines) == 0 {
		return nil
	}
	parts := min(runtime.GOMAXPROCS(0), (len(p.lines)+255)/256)
	size := (len(p.lines) + parts - 1) / parts
	errs := make([]*LineError, parts)
	var wg sync.WaitGroup
	for k := range parts {
		lo, hi := k*size, min((k+1)*size, len(p.lines))
		if lo >= hi {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = p.checkRange(name, lo, hi)
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// checkRange checks lines lo to hi-1, and returns the first that fails.
func (p *pendingLines) checkRange(name string, lo, hi int) *LineError {
	var buf []byte
	var r Record
	start := 0
	if lo > 0 {
		start = p.lines[lo-1].end
	}
	for _, l := range p.lines[lo:hi] {
		line := p.data[start:l.end]
		start = l.end
		r = Record{}
		var bad string
		if bad, buf = parseLine(line, &r, buf); bad != "" {
			return &LineError{name, l.n, bad}
		}
		// A line in canonical form reads the same both ways; checked all
		// the same, as it costs nothing next to parseLine.
		seq, prev, _ := scanRequest(line)
		if r.Kind != KindRequest || r.Seq != seq || r.Prev != string(prev[:]) {
			return &LineError{name, l.n, "the line is not as the gateway wrote it (edited)"}
		}
	}
	return nil
}
