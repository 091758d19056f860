package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// writeLog makes a closed log of n requests with checkpoints every 3 lines.
func writeLog(t *testing.T, n int) (string, manifests.PrivateKey) {
	t.Helper()
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Path: path, Key: &key, CheckpointLines: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		l.Append(Record{RequestID: "r" + string(rune('a'+i)), TokenID: "0123456789abcdef", Route: "/v1/chat/completions", Status: 200, PromptTokens: 3, CompletionTokens: 5})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func lines(t *testing.T, path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(string(data), "\n"), "\n")
}

func TestVerifyGood(t *testing.T) {
	path, key := writeLog(t, 7)
	rep, err := Verify([]string{path}, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 7 || rep.Checkpoints < 3 || rep.UnsignedTail != 0 || rep.LastSignedSeq != rep.LastSeq {
		t.Fatalf("report %+v", rep)
	}
	// Reopening continues the chain with a start record.
	l, err := Open(Options{Path: path, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(Record{RequestID: "again"})
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify([]string{path}, VerifyOptions{Live: true}); err != nil {
		t.Fatalf("live log: %v", err)
	}
	if _, err := Verify([]string{path}, VerifyOptions{}); !errors.Is(err, ErrTampered) {
		t.Fatalf("open log without --live: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify([]string{path}, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}}); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	path, key := writeLog(t, 7)
	orig := lines(t, path)
	other, _ := manifests.GenerateKey(nil)
	cases := map[string]func([]string) []string{
		"edited": func(l []string) []string {
			l[2] = strings.Replace(l[2], `"status":200`, `"status":201`, 1)
			return l
		},
		"edited whitespace": func(l []string) []string {
			l[2] = strings.Replace(l[2], `"status":200`, `"status": 200`, 1)
			return l
		},
		"removed":       func(l []string) []string { return append(l[:3], l[4:]...) },
		"removed first": func(l []string) []string { return l[1:] },
		"reordered": func(l []string) []string {
			l[2], l[3] = l[3], l[2]
			return l
		},
		"truncated lines": func(l []string) []string {
			// Cut inside a segment: the last line kept is a request that no
			// checkpoint covers.
			for i := len(l) - 2; i > 0; i-- {
				if strings.Contains(l[i], `"kind":"request"`) {
					return l[:i+1]
				}
			}
			return l[:1]
		},
		"truncated mid-line": func(l []string) []string {
			l[len(l)-1] = l[len(l)-1][:20]
			return l
		},
		"added": func(l []string) []string { return append(l[:3], append([]string{l[2]}, l[3:]...)...) },
		"rechained after edit": func(l []string) []string {
			// A forger edits a line and rewrites every later prev: the
			// chain holds again, but the signed checkpoints do not.
			l[2] = strings.Replace(l[2], `"status":200`, `"status":500`, 1)
			return rechain(t, l, 2, nil)
		},
		"re-signed by another key": func(l []string) []string {
			l[2] = strings.Replace(l[2], `"status":200`, `"status":500`, 1)
			return rechain(t, l, 2, &other)
		},
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			l := edit(append([]string(nil), orig...))
			p := filepath.Join(t.TempDir(), "audit.log")
			// lines drops the last newline: without it every case would
			// fail as truncated.
			data := strings.Join(l, "")
			if name != "truncated mid-line" && !strings.HasSuffix(data, "\n") {
				data += "\n"
			}
			if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Verify([]string{p}, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
			if !errors.Is(err, ErrTampered) {
				t.Fatalf("not detected: %v", err)
			}
			t.Log(err)
		})
	}
}

// rechain rewrites prev (and, with a key, checkpoint signatures) from line i on.
func rechain(t *testing.T, l []string, from int, key *manifests.PrivateKey) []string {
	var prev string
	for i, s := range l {
		line := []byte(strings.TrimSuffix(s, "\n"))
		if i > from {
			r := mustParse(t, line)
			r.Prev = prev
			if r.Signature != nil {
				if key != nil {
					sig := manifests.Sign(*key, Purpose, signedText(&r))
					r.Signature = &sig
				}
			}
			line = mustMarshal(t, &r)
			l[i] = string(line) + "\n"
		}
		prev = lineHash(line)
	}
	return l
}

func TestRotationKeepsChain(t *testing.T) {
	key, _ := manifests.GenerateKey(nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Millisecond); return now }
	l, err := Open(Options{Path: path, Key: &key, MaxBytes: 2000, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for range 40 {
		l.Append(Record{RequestID: "x", Route: "/v1/models", Status: 200})
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A rotation's unfinished new file, and anything else beside the log,
	// is not one of its files.
	for _, stray := range []string{".next", ".bak", ".2026"} {
		if err := os.WriteFile(path+stray, []byte("{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	files, err := Files(path)
	if err != nil || len(files) < 3 || files[len(files)-1] != path {
		t.Fatalf("files %v: %v", files, err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".next") || strings.HasSuffix(f, ".bak") || strings.HasSuffix(f, ".2026") {
			t.Errorf("Files lists %s", f)
		}
	}
	rotated := files[:len(files)-1]
	trust := VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}}
	rep, err := Verify(files, trust)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 40 || len(rep.Warnings) != 0 {
		t.Fatalf("report %+v", rep)
	}
	// Out of order, or with a file missing in between: detected.
	if _, err := Verify([]string{rotated[1], rotated[0], path}, trust); !errors.Is(err, ErrTampered) {
		t.Fatalf("reordered files: %v", err)
	}
	if _, err := Verify([]string{rotated[0], path}, trust); len(rotated) > 2 && !errors.Is(err, ErrTampered) {
		t.Fatalf("missing file: %v", err)
	}
	// The current file alone verifies, with a warning about the unchecked link.
	rep, err = Verify([]string{path}, trust)
	if err != nil || len(rep.Warnings) == 0 {
		t.Fatalf("current file alone: %+v %v", rep, err)
	}
}

// A file that ends in an incomplete line (its writer killed in the middle
// of a write, or the power lost) is repaired by the next writer: the
// incomplete bytes move to a file of their own, a repair record names them,
// and the chain goes on and verifies.
func TestOpenMovesTornLineAside(t *testing.T) {
	path, key := writeLog(t, 2)
	data, _ := os.ReadFile(path)
	cut := len(data) - 5
	torn := data[bytes.LastIndexByte(data[:cut], '\n')+1 : cut]
	os.WriteFile(path, data[:cut], 0o600)
	if _, err := Verify([]string{path}, VerifyOptions{Live: true}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("verify before the repair: %v", err)
	}

	l, err := Open(Options{Path: path, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(Record{RequestID: "after", Status: 200})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := lines(t, path)
	var r Record
	for _, line := range got {
		if strings.Contains(line, `"kind":"repair"`) {
			must(t, json.Unmarshal([]byte(line), &r))
		}
	}
	if r.Torn == nil {
		t.Fatalf("no repair record in\n%s", strings.Join(got, ""))
	}
	sum := sha256.Sum256(torn)
	if r.Torn.Bytes != int64(len(torn)) || r.Torn.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("repair record %+v, want %d bytes with SHA-256 %x", r.Torn, len(torn), sum)
	}
	aside, err := os.ReadFile(filepath.Join(filepath.Dir(path), r.Torn.File))
	if err != nil || !bytes.Equal(aside, torn) {
		t.Errorf("moved aside: %q %v, want %q", aside, err, torn)
	}
	if st, err := os.Stat(filepath.Join(filepath.Dir(path), r.Torn.File)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the torn file's mode: %v %v", st, err)
	}
	if files, err := Files(path); err != nil || len(files) != 1 {
		t.Errorf("Files lists the torn file: %v %v", files, err)
	}
	rep, err := Verify([]string{path}, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
	if err != nil || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], r.Torn.File) {
		t.Fatalf("verify after the repair: %+v %v", rep, err)
	}
	if !bytes.HasPrefix(readFile(t, path), data[:cut-len(torn)]) {
		t.Error("the complete lines before the torn one changed")
	}
}

// A writer that keeps the log open repairs a torn line another writer left
// (a "kb ingest" killed while the gateway serves), instead of failing every
// later write.
func TestLiveWriterMovesTornLineAside(t *testing.T) {
	key, err := manifests.GenerateKey(nil)
	must(t, err)
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Path: path, Key: &key})
	must(t, err)
	l.Append(Record{RequestID: "a", Status: 200})
	must(t, l.Flush())
	// What a killed writer leaves: the first half of a line, no lock held.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString(`{"seq":9,"kind":"kb.ingest","ti`)
	must(t, errors.Join(err, f.Close()))
	l.Append(Record{RequestID: "b", Status: 200})
	if err := l.Flush(); err != nil {
		t.Fatalf("write after another writer's torn line: %v", err)
	}
	must(t, l.Close())
	rep, err := Verify([]string{path}, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
	if err != nil || rep.Requests != 2 || len(rep.Warnings) != 1 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// More bytes without a newline than a line can hold are no torn line: the
// log is refused and left as it is.
func TestOpenRefusesLongIncompleteTail(t *testing.T) {
	path, key := writeLog(t, 2)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Write(bytes.Repeat([]byte("x"), maxLine+1))
	must(t, errors.Join(err, f.Close()))
	before := readFile(t, path)
	if _, err := Open(Options{Path: path, Key: &key}); err == nil || !strings.Contains(err.Error(), "incomplete line") {
		t.Fatalf("Open = %v", err)
	}
	if after := readFile(t, path); !bytes.Equal(after, before) {
		t.Error("the refused log was changed")
	}
	if torn, _ := filepath.Glob(path + ".torn-*"); len(torn) != 0 {
		t.Errorf("left %v", torn)
	}
}

// A repair record must name what it moved aside.
func TestVerifyRefusesEmptyRepair(t *testing.T) {
	path, _ := writeLog(t, 1)
	ls := lines(t, path)
	last := ls[len(ls)-1]
	var prev Record
	must(t, json.Unmarshal([]byte(last), &prev))
	line, err := json.Marshal(&Record{Seq: prev.Seq + 1, Kind: KindRepair, Time: prev.Time, Prev: lineHash([]byte(strings.TrimSuffix(last, "\n")))})
	must(t, err)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Write(append(line, '\n'))
	must(t, errors.Join(err, f.Close()))
	if _, err := Verify([]string{path}, VerifyOptions{Live: true}); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "repair record") {
		t.Fatalf("verify: %v", err)
	}
}

func TestNoContentByDefault(t *testing.T) {
	path, _ := writeLog(t, 1)
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, []byte(`"content"`)) {
		t.Fatal("content logged by default")
	}
}

// TestWritersShareOneChain has two writers append to one file at once, as
// a "kb ingest" does while the gateway serves, one of them rotating it: the
// files verify as one chain holding every record of both.
func TestWritersShareOneChain(t *testing.T) {
	key, _ := manifests.GenerateKey(nil)
	path := filepath.Join(t.TempDir(), "audit.log")
	now := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	clock := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
	gw, err := Open(Options{Path: path, Key: &key, MaxBytes: 4000, CheckpointLines: 7, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Open(Options{Path: path, Key: &key, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	const n = 150
	var wg sync.WaitGroup
	for _, w := range []struct {
		l    *Log
		kind string
	}{{gw, KindRequest}, {cli, KindKBIngest}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				w.l.Append(Record{Kind: w.kind, RequestID: fmt.Sprint(i), Route: "/v1/models", Status: 200})
				if i%10 == 0 {
					w.l.Flush()
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(cli.Close(), gw.Close()); err != nil {
		t.Fatal(err)
	}
	files, err := Files(path)
	if err != nil || len(files) < 3 {
		t.Fatalf("files %v: %v", files, err)
	}
	rep, err := Verify(files, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	kb := 0
	for _, f := range files {
		kb += strings.Count(string(readFile(t, f)), `"kind":"`+KindKBIngest+`"`)
	}
	if rep.Requests != n || kb != n {
		t.Fatalf("%d requests and %d kb.ingest records in the chain, want %d each (report %+v)", rep.Requests, kb, n, rep)
	}
}

// TestRemovedWhileInUse: a writer whose file was removed under it fails
// instead of starting a second chain at seq 0 in a new file.
func TestRemovedWhileInUse(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	l.Append(Record{RequestID: "after", Route: "/v1/models", Status: 200})
	if err := l.Flush(); err == nil || !strings.Contains(err.Error(), "removed or emptied") {
		t.Fatalf("Flush after removal = %v", err)
	}
}

// A writer killed between a rotation's two renames leaves the new file at
// PATH.next and nothing at PATH. The next Open finishes the rotation, and the
// chain goes on unbroken.
func TestRotationInterrupted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	key, _ := manifests.GenerateKey(nil)
	l, err := Open(Options{Path: path, Key: &key, MaxBytes: 2048})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		l.Append(Record{RequestID: "before", Route: "/v1/models", Status: 200})
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The file at PATH starts with a rotate record: put it back where the
	// rotation wrote it before its last rename.
	if !bytes.Contains(readFile(t, path), []byte(`"kind":"`+KindRotate+`"`)) {
		t.Fatal("no rotation happened")
	}
	if err := os.Rename(path, path+".next"); err != nil {
		t.Fatal(err)
	}
	l, err = Open(Options{Path: path, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(Record{RequestID: "after", Route: "/v1/models", Status: 200})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".next"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s.next left: %v", path, err)
	}
	files, err := Files(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(files, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}}); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGroupCommit checks that lines arriving within SyncEvery of the last
// fsync wait for the window, that Flush cuts the wait short, and that Close
// writes everything.
func TestGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := Open(Options{Path: path, SyncEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	onDisk := func(id string) bool {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(data, []byte(`"requestId":"`+id+`"`))
	}
	l.Append(Record{RequestID: "first"})
	if err := l.Flush(); err != nil || !onDisk("first") {
		t.Fatalf("after Flush: %v, first on disk: %v", err, onDisk("first"))
	}
	l.Append(Record{RequestID: "second"})
	time.Sleep(50 * time.Millisecond)
	if onDisk("second") {
		t.Fatal("a line was written inside the group commit window")
	}
	start := time.Now()
	if err := l.Flush(); err != nil || !onDisk("second") {
		t.Fatalf("after Flush: %v, second on disk: %v", err, onDisk("second"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Flush waited %v for the window", d)
	}
	l.Append(Record{RequestID: "third"})
	if err := l.Close(); err != nil || !onDisk("third") {
		t.Fatalf("after Close: %v, third on disk: %v", err, onDisk("third"))
	}
	if _, err := Verify([]string{path}, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestForgedUnsignedTail (issue 21 case 9): a forged request line and an
// unsigned stop record, re-chained onto a signed log, fail verification even
// without a trusted key, since the log's own start record names the key that
// signs every checkpoint.
func TestForgedUnsignedTail(t *testing.T) {
	path, key := writeLog(t, 4)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := lines(t, path)
	last := mustParse(t, []byte(strings.TrimSuffix(ls[len(ls)-1], "\n")))
	forged := &Record{Seq: last.Seq + 1, Kind: KindRequest, Time: last.Time, Prev: lineHash([]byte(strings.TrimSuffix(ls[len(ls)-1], "\n"))),
		RequestID: "req_forged", Route: "/v1/models", Status: 200}
	fl := mustMarshal(t, forged)
	stop := &Record{Seq: forged.Seq + 1, Kind: KindStop, Time: last.Time, Prev: lineHash(fl)}
	sl := mustMarshal(t, stop)
	out := append(append(append(append(data, fl...), '\n'), sl...), '\n')
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, o := range []VerifyOptions{{}, {Trusted: []manifests.PublicKey{key.Public()}}} {
		_, err := Verify([]string{path}, o)
		if !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "unsigned stop") {
			t.Errorf("trusted keys %d: forged tail gave %v", len(o.Trusted), err)
		}
	}
	// A log written without a key has unsigned checkpoints by design.
	p2 := filepath.Join(t.TempDir(), "nokey.log")
	l, err := Open(Options{Path: p2})
	if err != nil {
		t.Fatal(err)
	}
	l.Append(Record{RequestID: "r"})
	l.Close()
	if _, err := Verify([]string{p2}, VerifyOptions{}); err != nil {
		t.Errorf("keyless log: %v", err)
	}
}

// CompletePrefix finds what of a file ends with its last newline, and the
// last complete line, also when either spans several of its reads.
func TestCompletePrefix(t *testing.T) {
	long := strings.Repeat("x", 200<<10)
	for _, tc := range []struct {
		data, last string
		prefix     int
	}{
		{"", "", 0},
		{"torn", "", 0},
		{"a\n", "a", 2},
		{"a\nb", "a", 2},
		{"a\nb\n", "b", 4},
		{"a\n" + long + "\n" + long, long, len(long) + 3},
		{long + "\n", long, len(long) + 1},
		{"a\n" + long, "a", 2},
	} {
		p := filepath.Join(t.TempDir(), "f")
		must(t, os.WriteFile(p, []byte(tc.data), 0o600))
		f, err := os.Open(p)
		must(t, err)
		prefix, last, err := CompletePrefix(f)
		f.Close()
		if err != nil || prefix != int64(tc.prefix) || string(last) != tc.last {
			t.Errorf("%.20q (%d bytes): %d, %.20q, %v; want %d, %.20q", tc.data, len(tc.data), prefix, last, err, tc.prefix, tc.last)
		}
	}
}
