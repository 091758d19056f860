package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

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
	Warnings      []string `json:"warnings,omitempty"`
}

// verifier carries the chain across files.
type verifier struct {
	o       VerifyOptions
	rep     *Report
	started bool
	seq     int64
	prev    string
	last    string // kind of the last record
	keyID   string // the key the last start or rotate record named ("": none)
	lineNo  int    // lines read from the current file
	trusted map[string]manifests.PublicKey
	keyIDs  map[string]bool
	buf     []byte // reused to re-encode each line
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
	return v
}

const maxLine = 16 << 20

func (v *verifier) file(name string, r io.Reader) error {
	v.rep.Files = append(v.rep.Files, name)
	v.lineNo = 0
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) < maxLine {
				line, err = br.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) == 0 && err == io.EOF {
			if n == 1 {
				return &LineError{name, 0, "the file is empty"}
			}
			return nil
		}
		if err == io.EOF {
			return &LineError{name, n, "the last line is incomplete: the file was truncated"}
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return &LineError{name, n, "line is longer than 16 MiB"}
			}
			return fmt.Errorf("verify audit log %s: %w", name, err)
		}
		if err := v.line(name, n, line[:len(line)-1]); err != nil {
			return err
		}
		v.lineNo = n
	}
}

func (v *verifier) line(name string, n int, line []byte) error {
	fail := func(format string, a ...any) error { return &LineError{name, n, fmt.Sprintf(format, a...)} }
	// A line must re-encode to itself, byte for byte. That also refuses
	// unknown fields (dropped in decoding), so the plain Unmarshal serves;
	// the strict decoder runs only to name what is wrong with a bad line.
	var r Record
	if !decodeRequest(line, &r) {
		r = Record{}
		if err := json.Unmarshal(line, &r); err != nil {
			return fail("not an audit record: %v", err)
		}
	}
	canon, ok := appendRequest(v.buf[:0], &r)
	if ok {
		v.buf = canon
	} else {
		canon, _ = json.Marshal(&r)
	}
	if !bytes.Equal(canon, line) {
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&Record{}); err != nil {
			return fail("not an audit record: %v", err)
		}
		return fail("the line is not as the gateway wrote it (edited)")
	}
	first := n == 1
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
		if r.Prev != v.prev {
			return fail("prev does not match the hash of the line before: that line (seq %d) was edited, or lines were reordered", v.seq)
		}
	}
	if !v.started {
		v.rep.FirstSeq = r.Seq
	}
	v.started = true
	v.seq, v.prev, v.last = r.Seq, lineHash(line), r.Kind
	v.rep.Lines++
	v.rep.LastSeq = r.Seq
	v.rep.UnsignedTail++

	switch r.Kind {
	case KindRequest:
		v.rep.Requests++
	case KindRestore:
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
		if _, err := manifests.Check(sigs, Purpose, signedText(&r), []manifests.PublicKey{k}, 1); err != nil {
			return fail("checkpoint signature does not verify: %v", err)
		}
		v.rep.Checkpoints++
		v.rep.LastSignedSeq = r.Seq
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
