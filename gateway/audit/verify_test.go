package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// bigLog writes a closed log of more than three blocks, so that lines are
// parsed on several goroutines and some straddle a block's end.
func bigLog(t *testing.T) (string, manifests.PrivateKey) {
	t.Helper()
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Path: path, Key: &key, CheckpointLines: 1000})
	if err != nil {
		t.Fatal(err)
	}
	r := Record{RequestID: "0123456789abcdef0123456789abcdef", TokenID: "0123456789abcdef", Client: "10.20.0.7:51234",
		Method: "POST", Route: "/v1/chat/completions", Model: "qwen2.5-7b-instruct", Status: 200, LatencyMs: 812.5}
	for {
		l.Append(r)
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(path); st.Size() > 3*blockSize+blockSize/2 {
			break
		}
		for range 2000 {
			l.Append(r)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func TestVerifyAcrossBlocks(t *testing.T) {
	path, key := bigLog(t)
	trust := VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}}
	rep, err := Verify([]string{path}, trust)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := bytes.Count(data, []byte("\n"))
	if rep.Lines != n || rep.LastSeq != int64(n-1) || rep.UnsignedTail != 0 {
		t.Fatalf("report %+v for %d lines", rep, n)
	}
	// The same log handed over in one-byte reads, through the streaming
	// Verifier.
	v := NewVerifier(trust)
	if err := v.File(path, io.LimitReader(oneByte{bytes.NewReader(data)}, int64(len(data)))); err != nil {
		t.Fatal(err)
	}
	if rep2, err := v.End(); err != nil || rep2.Lines != n {
		t.Fatalf("streamed: %v, %+v", err, rep2)
	}

	// A line straddling the end of the second block, and one far into the
	// fourth: each is named by its own line number, and the first in the
	// file is the one reported.
	straddle := bytes.Count(data[:2*blockSize], []byte("\n")) + 1
	far := n - 3
	for _, tc := range []struct {
		name  string
		edit  func(l []string) []string
		line  int
		cause string
	}{
		{"edited at a block boundary", func(l []string) []string {
			l[straddle-1] = strings.Replace(l[straddle-1], `"status":200`, `"status":201`, 1)
			return l
		}, straddle + 1, "prev does not match"},
		{"edited in two places", func(l []string) []string {
			l[far-1] = strings.Replace(l[far-1], `"status":200`, `"status":500`, 1)
			l[straddle-1] = strings.Replace(l[straddle-1], `"method":"POST"`, `"method":"POST","x":1`, 1)
			return l
		}, straddle, `unknown field "x"`},
		{"line removed far in", func(l []string) []string { return append(l[:far-1:far-1], l[far:]...) }, far, "sequence goes from"},
		{"truncated mid-line", func(l []string) []string {
			l[n-1] = l[n-1][:10]
			return l
		}, n, "incomplete"},
		{"a line longer than 16 MiB", func(l []string) []string {
			l[far-1] = strings.Repeat("x", maxLine+blockSize)
			return l
		}, far, "longer than 16 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := strings.SplitAfter(string(data), "\n")
			l = l[:len(l)-1]
			bad := filepath.Join(t.TempDir(), "audit.log")
			if err := os.WriteFile(bad, []byte(strings.Join(tc.edit(l), "")), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Verify([]string{bad}, trust)
			var le *LineError
			if !errors.As(err, &le) || !errors.Is(err, ErrTampered) {
				t.Fatalf("got %v, want a LineError", err)
			}
			if le.Line != tc.line || !strings.Contains(le.Reason, tc.cause) {
				t.Errorf("got line %d %q, want line %d %q", le.Line, le.Reason, tc.line, tc.cause)
			}
		})
	}
}

// oneByte reads one byte at a time.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

// TestVerifyReadError: an I/O error is reported after the lines before it
// are checked, as an I/O error, not as tampering.
func TestVerifyReadError(t *testing.T) {
	path, key := writeLog(t, 5)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("disk gone")
	r := io.MultiReader(bytes.NewReader(data[:len(data)/2]), errReader{boom})
	_, err = VerifyReader("x", r, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
	if !errors.Is(err, boom) || errors.Is(err, ErrTampered) {
		t.Fatalf("got %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// From continues a chain verified before: the rest of the file must follow
// the given line, and nothing else is accepted.
func TestVerifyFrom(t *testing.T) {
	path, key := writeLog(t, 9)
	l := lines(t, path)
	k := 4 // lines 0..k verified before
	var head Record
	if err := json.Unmarshal([]byte(strings.TrimSuffix(l[k], "\n")), &head); err != nil {
		t.Fatal(err)
	}
	rest := strings.Join(l[k+1:], "") + "\n"
	trust := []manifests.PublicKey{key.Public()}
	good := &Head{Seq: head.Seq, Hash: lineHash([]byte(strings.TrimSuffix(l[k], "\n")))}
	rep, err := VerifyReader("rest", strings.NewReader(rest), VerifyOptions{Trusted: trust, From: good})
	if err != nil || rep.Lines != len(l)-k-1 || rep.FirstSeq != head.Seq+1 {
		t.Fatalf("%v, %+v", err, rep)
	}
	for _, tc := range []struct {
		name string
		from *Head
		data string
		want string
	}{
		{"another line's hash", &Head{Seq: head.Seq, Hash: lineHash([]byte("x"))}, rest, "prev does not match"},
		{"a line left out", good, strings.Join(l[k+2:], "") + "\n", "sequence goes from"},
		{"no From: not a chain's start", nil, rest, "not at the start of a chain"},
	} {
		_, err := VerifyReader("rest", strings.NewReader(tc.data), VerifyOptions{Trusted: trust, From: tc.from})
		if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}
