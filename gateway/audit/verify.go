package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// ErrTampered is wrapped by every verification failure: a line was edited,
// removed, reordered, added, or the log was truncated.
var ErrTampered = errors.New("audit log fails verification")

// LineError names the file and line where verification failed.
type LineError struct {
	File   string
	Line   int
	Reason string
}

func (e *LineError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Unwrap makes errors.Is(err, ErrTampered) true.
func (e *LineError) Unwrap() error { return ErrTampered }

// VerifyOptions say what to trust.
type VerifyOptions struct {
	// Trusted are the keys checkpoints must be signed with. When empty the
	// keys the log names in its own start records are used, which catches
	// careless edits but not a forger who re-signs with a key of their own.
	Trusted []manifests.PublicKey
	// Live accepts a last file that does not end with a checkpoint or stop
	// record (the gateway is still writing it).
	Live bool
	// From, when set, continues a chain verified before up to that line:
	// the first file given is the rest of that line's file, from the line
	// after it, which must follow it (seq and prev).
	From *Head

	// fullCheck checks every line in full, covered or not (covered.go):
	// tests compare the two ways.
	fullCheck bool
}

// Head is one line of the chain: its seq and its chain hash, which the
// next line's prev must be.
type Head struct {
	Seq  int64
	Hash string
}

// Report summarises a verified log.
type Report struct {
	Files         []string `json:"files"`
	Lines         int      `json:"lines"`
	Requests      int      `json:"requests"`
	Checkpoints   int      `json:"checkpoints"` // signed checkpoint and stop records
	FirstSeq      int64    `json:"firstSeq"`
	LastSeq       int64    `json:"lastSeq"`
	LastSignedSeq int64    `json:"lastSignedSeq"` // -1: none
	UnsignedTail  int      `json:"unsignedTail"`  // lines after the last signed record
	KeyIDs        []string `json:"keyIds"`
	SelfKeyed     bool     `json:"selfKeyed"` // checked against the log's own keys (no --trust)
	// LastLineSHA256 is the chain hash of the last line (without its
	// newline), in hex: what the next line's prev must be.
	LastLineSHA256 string   `json:"lastLineSha256"`
	Warnings       []string `json:"warnings,omitempty"`
}

// verifier carries the chain across files.
type verifier struct {
	o       VerifyOptions
	rep     *Report
	started bool
	seq     int64
	prev    [2 * sha256.Size]byte // the last line's chain hash, in hex
	last    string                // kind of the last record
	keyID   string                // the key the last start or rotate record named ("": none)
	lineNo  int                   // lines read from the current file
	cont    bool                  // the current file continues VerifyOptions.From's line
	trusted map[string]manifests.PublicKey
	keyIDs  map[string]bool
	pending pendingLines // request lines not covered by a trusted checkpoint yet (covered.go)
	free    []*blockMem  // blocks' memory, for reuse
}

// Verify checks the files of one log, oldest first (rotated files before the
// current one). Errors wrap ErrTampered (as *LineError) when the content
// fails, or are I/O errors.
func Verify(paths []string, o VerifyOptions) (*Report, error) {
	v := newVerifier(o)
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return v.rep, fmt.Errorf("verify audit log: %w", err)
		}
		err = v.file(p, f)
		f.Close()
		if err != nil {
			return v.rep, err
		}
	}
	return v.rep, v.end(paths[len(paths)-1])
}

// VerifyReader checks a single log read from r; name is used in errors.
func VerifyReader(name string, r io.Reader, o VerifyOptions) (*Report, error) {
	v := newVerifier(o)
	if err := v.file(name, r); err != nil {
		return v.rep, err
	}
	return v.rep, v.end(name)
}

func newVerifier(o VerifyOptions) *verifier {
	v := &verifier{o: o, rep: &Report{LastSignedSeq: -1, KeyIDs: []string{}}, trusted: map[string]manifests.PublicKey{}, keyIDs: map[string]bool{}}
	for _, k := range o.Trusted {
		v.trusted[k.ID] = k
	}
	v.rep.SelfKeyed = len(o.Trusted) == 0
	if o.From != nil {
		v.started, v.cont = true, true
		v.seq = o.From.Seq
		// Not 64 characters: left zero, which no prev equals.
		if len(o.From.Hash) == len(v.prev) {
			copy(v.prev[:], o.From.Hash)
		}
		v.rep.FirstSeq = o.From.Seq + 1
	}
	return v
}

const maxLine = 16 << 20

// Verifier checks one log handed to it file by file, oldest first, as
// streams: backup verify checks the chain while it decrypts the archive.
// Verify and VerifyReader check the same way.
type Verifier struct {
	v    *verifier
	last string
}

// NewVerifier starts checking a log with o.
func NewVerifier(o VerifyOptions) *Verifier { return &Verifier{v: newVerifier(o)} }

// File checks the next file of the log, read from r to its end (or to the
// first failing line); name is used in errors. Errors are as Verify's.
func (x *Verifier) File(name string, r io.Reader) error {
	x.last = name
	return x.v.file(name, r)
}

// End checks how the chain ends, after the last file, and returns the
// report.
func (x *Verifier) End() (*Report, error) { return x.v.rep, x.v.end(x.last) }

// blockSize is how much of a file each parsing goroutine takes at a time,
// once the file has proved long: its first block is firstBlock, and each
// next one twice the one before, so a short file costs little.
const (
	blockSize  = 4 << 20
	firstBlock = 64 << 10
)

// block is a run of whole lines of one file, parsed on its own goroutine.
type block struct {
	first int       // the line number of its first line
	scan  bool      // read request lines with scanRequest (covered.go)
	data  []byte    // whole lines, each ending with a newline
	mem   *blockMem // what data and lines lie in, from the verifier's free list
	lines []parsed
	fatal error // instead of lines: what ended the file here
	done  chan struct{}
}

// parsed is what the chain needs of a line that was checked on its own:
// few pointers, so that the blocks waiting to be linked cost the garbage
// collector little.
type parsed struct {
	seq  int64
	kind string
	prev string
	hash [sha256.Size]byte // its chain hash (the next line's prev), not in hex: no pointer for the collector
	bad  string            // why the line is not an audit record as the gateway writes it
	rec  *Record           // the whole record, for the kinds whose other fields count
	// scanned: read by scanRequest, not checked yet; prev is in prevHex
	// and the line lies in the block's data from start to end.
	scanned    bool
	prevHex    [hexHash]byte
	start, end int
}

// blockMem is the memory of a block, kept for the next one: a whole log
// passes through a few of them. (A sync.Pool may lose them at any
// collection, and fresh memory costs page faults: a backup verify of
// 256 MiB allocated about 125 MB of blocks and line slices before.)
type blockMem struct {
	buf   []byte
	lines []parsed
}

// getMem returns a blockMem from the free list, or a new one.
func (v *verifier) getMem() *blockMem {
	if n := len(v.free); n > 0 {
		m := v.free[n-1]
		v.free = v.free[:n-1]
		return m
	}
	return &blockMem{}
}

func (b *block) parse() {
	defer close(b.done)
	var buf []byte
	var r Record
	for p := b.data; len(p) > 0; {
		i := bytes.IndexByte(p, '\n')
		var l parsed
		if b.scan {
			if l.seq, l.prevHex, l.scanned = scanRequest(p[:i]); l.scanned {
				l.kind, l.hash = KindRequest, sha256.Sum256(p[:i])
				l.start = len(b.data) - len(p)
				l.end = l.start + i
				b.lines = append(b.lines, l)
				p = p[i+1:]
				continue
			}
		}
		r = Record{}
		l.bad, buf = parseLine(p[:i], &r, buf)
		if l.bad == "" {
			l.seq, l.kind, l.prev, l.hash = r.Seq, r.Kind, r.Prev, sha256.Sum256(p[:i])
			switch r.Kind {
			case KindRequest:
				l.kind = KindRequest // the decoded copy is garbage now
			case KindStart, KindRotate, KindCheckpoint, KindStop, KindRepair:
				rc := r
				l.rec = &rc
			}
		}
		b.lines = append(b.lines, l)
		p = p[i+1:]
	}
}

// file reads r in blocks of whole lines that goroutines parse, hash and
// re-encode side by side (each line's check stands alone), and links them
// into the chain here, in order: only that comparison is sequential. The
// first failing line, in file order, is the error. Request lines a trusted
// checkpoint covers are not re-encoded (covered.go); those it does not are
// checked at the end of the file, or before a failure is reported.
func (v *verifier) file(name string, r io.Reader) error {
	defer func() { v.cont = false }()
	v.pending.reset()
	err := v.read(name, r)
	// Pending lines come before whatever failed: theirs is the error.
	if perr := v.pending.check(name); perr != nil {
		return perr
	}
	return err
}

// read does file's work but for the lines still pending at its end.
func (v *verifier) read(name string, r io.Reader) error {
	v.rep.Files = append(v.rep.Files, name)
	v.lineNo = 0
	window := 2*runtime.GOMAXPROCS(0) + 1
	var queue []*block
	var carry []byte
	lines, eof, size := 0, false, firstBlock
	for !eof || len(queue) > 0 {
		if !eof && len(queue) < window {
			b := &block{done: make(chan struct{}), mem: v.getMem(), scan: len(v.o.Trusted) > 0 && !v.o.fullCheck}
			// carry lies in a buffer that is not back in the pool yet: the
			// block it came from is at most the newest one queued.
			need := len(carry) + size
			if cap(b.mem.buf) < need {
				// Room for a carried line, so that a full-size buffer
				// serves every later block.
				b.mem.buf = make([]byte, need, max(need, blockSize)+64<<10)
			}
			buf := b.mem.buf[:need]
			copy(buf, carry)
			size = min(2*size, blockSize)
			n, err := io.ReadFull(r, buf[len(carry):])
			buf = buf[:len(carry)+n]
			b.mem.buf = buf
			switch {
			case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF):
				eof = true
			case err != nil:
				eof, b.fatal = true, fmt.Errorf("verify audit log %s: %w", name, err)
			}
			if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
				b.data, carry = buf[:i+1], buf[i+1:]
			} else {
				carry = buf
			}
			b.first = lines + 1
			nl := bytes.Count(b.data, []byte{'\n'})
			if cap(b.mem.lines) < nl {
				b.mem.lines = make([]parsed, 0, nl)
			}
			b.lines = b.mem.lines[:0]
			lines += nl
			switch {
			case b.fatal != nil:
			case eof && len(carry) > 0:
				b.fatal = &LineError{name, lines + 1, "the last line is incomplete: the file was truncated"}
			case eof && lines == 0:
				b.fatal = &LineError{name, 0, "the file is empty"}
			case len(carry) > maxLine:
				eof, b.fatal = true, &LineError{name, lines + 1, "line is longer than 16 MiB"}
			}
			if len(b.data) == 0 && b.fatal == nil {
				continue // a long line still being read
			}
			if len(b.data) > 0 {
				go b.parse()
			} else {
				close(b.done)
			}
			queue = append(queue, b)
			continue
		}
		b := queue[0]
		queue = queue[1:]
		<-b.done
		for i := range b.lines {
			n := b.first + i
			l := &b.lines[i]
			if l.bad != "" {
				return &LineError{name, n, l.bad}
			}
			if l.scanned {
				// Before the link: if it fails, this line's own check
				// comes first.
				v.pending.add(n, b.data[l.start:l.end])
			}
			if err := v.link(name, n, l); err != nil {
				return err
			}
			v.lineNo = n
			if v.pending.full() {
				if err := v.pending.check(name); err != nil {
					return err
				}
			}
		}
		if len(carry) == 0 || len(queue) > 0 {
			v.free = append(v.free, b.mem)
		}
		if b.fatal != nil {
			return b.fatal
		}
	}
	return nil
}

// parseLine decodes one line (without its newline) into r and checks that
// it re-encodes to itself, byte for byte; it returns why not, and buf for
// reuse.
func parseLine(line []byte, r *Record, buf []byte) (string, []byte) {
	// A line must re-encode to itself, byte for byte. That also refuses
	// unknown fields (dropped in decoding), so the plain Unmarshal serves;
	// the strict decoder runs only to name what is wrong with a bad line.
	if !decodeRequest(line, r) {
		*r = Record{}
		if err := json.Unmarshal(line, r); err != nil {
			return fmt.Sprintf("not an audit record: %v", err), buf
		}
	}
	canon, ok := appendRequest(buf[:0], r)
	if ok {
		buf = canon
	} else {
		canon, _ = json.Marshal(r)
	}
	if !bytes.Equal(canon, line) {
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&Record{}); err != nil {
			return fmt.Sprintf("not an audit record: %v", err), buf
		}
		return "the line is not as the gateway wrote it (edited)", buf
	}
	return "", buf
}

// link checks a parsed line's place in the chain and what its kind means.
func (v *verifier) link(name string, n int, l *parsed) error {
	fail := func(format string, a ...any) error { return &LineError{name, n, fmt.Sprintf(format, a...)} }
	r := l.rec
	if r == nil {
		r = &Record{Seq: l.seq, Kind: l.kind, Prev: l.prev}
	}
	first := n == 1 && !v.cont
	switch {
	case first && !v.started && r.Seq == 0:
		if r.Kind != KindStart || r.Prev != "" {
			return fail("the chain's first line must be a start record with no prev")
		}
	case first && !v.started:
		if r.Kind != KindRotate {
			return fail("the file starts at seq %d, not at the start of a chain or a rotation: lines were removed from its beginning", r.Seq)
		}
		v.rep.Warnings = append(v.rep.Warnings, fmt.Sprintf("%s continues %s (seq %d), which was not given: the link to it is not checked", name, r.Previous, r.Seq))
	case first:
		if r.Kind != KindRotate {
			return fail("the file does not start with a rotate record linking it to the file before")
		}
		fallthrough
	default:
		if r.Seq != v.seq+1 {
			return fail("sequence goes from %d to %d: lines were removed, added or reordered", v.seq, r.Seq)
		}
		if l.scanned && l.prevHex != v.prev || !l.scanned && r.Prev != string(v.prev[:]) {
			return fail("prev does not match the hash of the line before: that line (seq %d) was edited, or lines were reordered", v.seq)
		}
	}
	if !v.started {
		v.rep.FirstSeq = r.Seq
	}
	v.started = true
	v.seq, v.last = r.Seq, r.Kind
	hex.Encode(v.prev[:], l.hash[:])
	v.rep.Lines++
	v.rep.LastSeq = r.Seq
	v.rep.UnsignedTail++

	switch r.Kind {
	case KindRequest:
		v.rep.Requests++
	case KindRestore:
	case KindRepair:
		if r.Torn == nil {
			return fail("a repair record that names no incomplete line")
		}
		v.rep.Warnings = append(v.rep.Warnings, fmt.Sprintf("%s:%d: a writer found the file ending in an incomplete line (a writer killed mid-write, or a power loss) and moved its %d bytes to %s (SHA-256 %s)",
			name, n, r.Torn.Bytes, r.Torn.File, r.Torn.SHA256))
	case KindKBIngest, KindKBACL, KindKBQuery, KindKBRemove:
		// knowledge-base events: chained like requests
	case KindStart, KindRotate:
		v.keyID = r.KeyID
		if r.PublicKey != "" {
			keys, err := manifests.ParsePublicKeys([]byte(r.PublicKey))
			if err != nil || len(keys) != 1 || keys[0].ID != r.KeyID {
				return fail("the key it names is not a valid public key with ID %s", r.KeyID)
			}
			if len(v.o.Trusted) == 0 {
				v.trusted[keys[0].ID] = keys[0]
			}
		}
	case KindCheckpoint, KindStop:
		if r.Signature == nil {
			if len(v.o.Trusted) > 0 {
				return fail("unsigned %s record, but --trust requires signed checkpoints", r.Kind)
			}
			if v.keyID != "" {
				// A gateway with a key signs every checkpoint and stop.
				return fail("unsigned %s record after a start record naming key %s, whose gateway signs every checkpoint: lines were added", r.Kind, v.keyID)
			}
			break
		}
		k, ok := v.trusted[r.Signature.KeyID]
		if !ok {
			return fail("checkpoint signed by key %s, which is not trusted", r.Signature.KeyID)
		}
		sigs := &manifests.Signatures{Signatures: []manifests.Signature{*r.Signature}}
		if _, err := manifests.Check(sigs, Purpose, signedText(r), []manifests.PublicKey{k}, 1); err != nil {
			return fail("checkpoint signature does not verify: %v", err)
		}
		v.rep.Checkpoints++
		v.rep.LastSignedSeq = r.Seq
		// Every line before it is authenticated byte for byte (covered.go).
		v.pending.reset()
		v.rep.UnsignedTail = 0
		if !v.keyIDs[k.ID] {
			v.keyIDs[k.ID] = true
			v.rep.KeyIDs = append(v.rep.KeyIDs, k.ID)
		}
	default:
		return fail("unknown record kind %q", r.Kind)
	}
	return nil
}

// end checks how the chain ends.
func (v *verifier) end(name string) error {
	if !v.started {
		return &LineError{name, 0, "no records"}
	}
	v.rep.LastLineSHA256 = string(v.prev[:])
	if len(v.o.Trusted) > 0 && v.rep.Checkpoints == 0 {
		return &LineError{name, 0, "no signed checkpoint: nothing in the log is covered by the trusted key"}
	}
	if v.last != KindStop && v.last != KindCheckpoint {
		if !v.o.Live {
			return &LineError{name, v.lineNo, fmt.Sprintf("the log does not end with a checkpoint or stop record (last seq %d, last signed seq %d): lines were removed from its end, or the gateway is still running or crashed (pass --live for a log in use)", v.rep.LastSeq, v.rep.LastSignedSeq)}
		}
		v.rep.Warnings = append(v.rep.Warnings, fmt.Sprintf("the last %d lines are not covered by a signed checkpoint yet", v.rep.UnsignedTail))
	}
	if v.rep.Checkpoints == 0 {
		v.rep.Warnings = append(v.rep.Warnings, "the log has no signed checkpoints (the gateway ran without --audit-key): lines removed from its end cannot be detected")
	}
	return nil
}
