package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// verifyLines writes l (as lines returns them: the last without its
// newline) as a log and verifies it with o.
func verifyLines(t *testing.T, l []string, o VerifyOptions) (*Report, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "audit.log")
	data := strings.Join(l, "")
	if !strings.HasSuffix(data, "\n") {
		data += "\n"
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return Verify([]string{p}, o)
}

// wantLineError fails unless err is tampering reported at line n for a
// reason containing cause.
func wantLineError(t *testing.T, err error, n int, cause string) {
	t.Helper()
	var le *LineError
	if !errors.As(err, &le) || !errors.Is(err, ErrTampered) {
		t.Fatalf("got %v, want a LineError", err)
	}
	if le.Line != n || !strings.Contains(le.Reason, cause) {
		t.Fatalf("got line %d %q, want line %d %q", le.Line, le.Reason, n, cause)
	}
}

// requestAt returns the index of the first request line at or after i.
func requestAt(t *testing.T, l []string, i int) int {
	t.Helper()
	for ; i < len(l); i++ {
		if strings.Contains(l[i], `"kind":"request"`) {
			return i
		}
	}
	t.Fatal("no request line")
	return 0
}

// A request line inside a signed stretch, rewritten to another record in
// canonical form (so it would pass the canonical check), is refused: the
// line after it no longer links, and with its prev rewritten too, the
// signature over the next checkpoint fails.
func TestCoveredCanonicalRewrite(t *testing.T) {
	path, key := writeLog(t, 7)
	orig := lines(t, path)
	trust := VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}}
	if _, err := verifyLines(t, orig, trust); err != nil {
		t.Fatal(err)
	}
	i := requestAt(t, orig, len(orig)/2)
	rewrite := func(l []string) {
		r := mustParse(t, []byte(strings.TrimSuffix(l[i], "\n")))
		r.Status, r.Route = 500, "/v1/models"
		l[i] = string(mustMarshal(t, &r)) + "\n"
	}
	l := append([]string(nil), orig...)
	rewrite(l)
	_, err := verifyLines(t, l, trust)
	wantLineError(t, err, i+2, "prev does not match the hash of the line before")

	l = append([]string(nil), orig...)
	rewrite(l)
	c := i + 1
	for !strings.Contains(l[c], `"kind":"checkpoint"`) && !strings.Contains(l[c], `"kind":"stop"`) {
		c++
	}
	_, err = verifyLines(t, rechain(t, l, i, nil), trust)
	wantLineError(t, err, c+1, "checkpoint signature does not verify")
}

// makeNonCanonical adds a space after a colon of line i: the same record,
// not as the gateway writes it.
func makeNonCanonical(l []string, i int) {
	l[i] = strings.Replace(l[i], `"status":200`, `"status": 200`, 1)
}

// Without trusted keys every line gets the canonical check: a request line
// with extra whitespace, in a log rechained around it, is refused as edited.
func TestUntrustedNonCanonical(t *testing.T) {
	path, _ := writeLog(t, 7)
	orig := lines(t, path)
	i := requestAt(t, orig, len(orig)/2)
	l := append([]string(nil), orig...)
	makeNonCanonical(l, i)
	// Self-keyed: the checkpoints re-signed would not verify, so use a
	// log without a key, whose checkpoints are unsigned by design.
	_, err := verifyLines(t, l, VerifyOptions{})
	wantLineError(t, err, i+1, "edited")

	p2 := filepath.Join(t.TempDir(), "nokey.log")
	lg, err := Open(Options{Path: p2, CheckpointLines: 3})
	if err != nil {
		t.Fatal(err)
	}
	for range 7 {
		lg.Append(Record{RequestID: "r", Route: "/v1/models", Status: 200})
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	orig = lines(t, p2)
	if _, err := verifyLines(t, orig, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	i = requestAt(t, orig, len(orig)/2)
	l = append([]string(nil), orig...)
	makeNonCanonical(l, i)
	l = rechain(t, l, i, nil)
	_, err = verifyLines(t, l, VerifyOptions{})
	wantLineError(t, err, i+1, "the line is not as the gateway wrote it (edited)")
}

// liveLog writes a signed log and then tail requests after its last
// checkpoint, left open (as a running gateway leaves it).
func liveLog(t *testing.T, tail int) ([]string, manifests.PrivateKey) {
	t.Helper()
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	lg, err := Open(Options{Path: path, Key: &key, CheckpointLines: 1 << 30, CheckpointEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for range tail {
		lg.Append(Record{RequestID: "r", Route: "/v1/chat/completions", Status: 200, LatencyMs: 3.5})
	}
	if err := lg.Flush(); err != nil {
		t.Fatal(err)
	}
	l := lines(t, path)
	// Close only after reading: the stop record is not part of the test.
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}
	return l, key
}

// A non-canonical request line after the last trusted checkpoint (in the
// unsigned tail, which no signature covers) is refused, as edited, at its
// own line, whether it ends the log or lines rechained after it follow;
// and so it is past the bound on lines held back (maxPendingLines), where
// they are checked in the middle of the file.
func TestTrustedNonCanonicalTail(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tail, i int // requests after the checkpoint; the one edited
	}{
		{"last line", 5, 5},
		{"rechained after", 5, 3},
		{"past the bound", maxPendingLines + 100, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig, key := liveLog(t, tc.tail)
			trust := VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}, Live: true}
			rep, err := verifyLines(t, orig, trust)
			if err != nil {
				t.Fatal(err)
			}
			if rep.UnsignedTail != tc.tail {
				t.Fatalf("unsigned tail %d, want %d", rep.UnsignedTail, tc.tail)
			}
			i := len(orig) - tc.tail - 1 + tc.i // line index
			l := append([]string(nil), orig...)
			makeNonCanonical(l, i)
			if l[i] == orig[i] {
				t.Fatal("line not edited")
			}
			l = rechain(t, l, i, nil)
			_, err = verifyLines(t, l, trust)
			wantLineError(t, err, i+1, "the line is not as the gateway wrote it (edited)")
		})
	}
}

// scanRequest reads what the decoder reads from every request line the
// gateway writes, and declines other shapes.
func TestScanRequest(t *testing.T) {
	prev := strings.Repeat("0123456789abcdef", 4)
	r := Record{Seq: 1234567, Kind: KindRequest, Time: time.Date(2026, 11, 28, 12, 0, 0, 5, time.UTC), Prev: prev,
		RequestID: "x", Status: 200, LatencyMs: 1.5}
	line, ok := appendRequest(nil, &r)
	if !ok {
		t.Fatal("appendRequest declined")
	}
	seq, p, ok := scanRequest(line)
	if !ok || seq != r.Seq || string(p[:]) != prev {
		t.Fatalf("scan %v %d %s of %s", ok, seq, p, line)
	}
	r.Content = &Content{Request: json.RawMessage(`{"a":1}`)}
	if line2 := mustMarshal(t, &r); !bytes.HasPrefix(line2, line[:len(line)-1-len(`,"requestId":"x","status":200,"latencyMs":1.5`)]) {
		t.Fatalf("json.Marshal writes another head: %s", line2)
	} else if seq, _, ok := scanRequest(line2); !ok || seq != r.Seq {
		t.Fatalf("a request with content not scanned: %s", line2)
	}
	for _, bad := range []string{
		strings.Replace(string(line), `"seq":1234567`, `"seq":01234567`, 1),
		strings.Replace(string(line), `"seq":1234567`, `"seq":-1`, 1),
		strings.Replace(string(line), `"seq":1234567`, `"seq":1234567890123456789`, 1),
		strings.Replace(string(line), `"seq":1234567`, `"seq": 1234567`, 1),
		strings.Replace(string(line), `"kind":"request"`, `"kind":"start"`, 1),
		strings.Replace(string(line), prev, strings.ToUpper(prev), 1),
		strings.Replace(string(line), prev, prev[1:], 1),
		strings.Replace(string(line), prev, prev+"0", 1),
		strings.Replace(string(line), prev, prev[:63]+"\x00", 1),
		strings.Replace(string(line), `"time":"`, `"time":`, 1),
		string(line[:len(line)-1]),
		"",
		`{"seq":`,
	} {
		if _, _, ok := scanRequest([]byte(bad)); ok {
			t.Errorf("scanned %q", bad)
		}
	}
}
