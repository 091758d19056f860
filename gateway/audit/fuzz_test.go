package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

func mustParse(t *testing.T, line []byte) Record {
	t.Helper()
	var r Record
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func mustMarshal(t *testing.T, r *Record) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzVerifyReader feeds arbitrary bytes to the audit log reader: it must
// return a report or an error, never panic or hang.
func FuzzVerifyReader(f *testing.F) {
	dir := f.TempDir()
	l, err := Open(Options{Path: dir + "/a.log"})
	if err != nil {
		f.Fatal(err)
	}
	l.Append(Record{RequestID: "r1", Status: 200})
	l.Close()
	good, _ := os.ReadFile(dir + "/a.log")
	f.Add(good)
	f.Add([]byte("{}\n"))
	f.Add([]byte(`{"seq":0,"kind":"start","time":"2026-11-26T00:00:00Z","prev":"","publicKey":"x","keyId":"y"}` + "\n"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := VerifyReader("fuzz", bytesReader(data), VerifyOptions{})
		if err == nil && (rep.Lines == 0 || rep.LastSeq < rep.FirstSeq) {
			t.Fatalf("accepted with report %+v", rep)
		}
	})
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// FuzzRoundTrip: whatever strings a request record carries, the line the
// log writes verifies, byte for byte (verify decodes each line and encodes
// it again).
func FuzzRoundTrip(f *testing.F) {
	f.Add("/v1/\xff", "GET", "qwen", "127.0.0.1:1", []byte(nil))
	f.Add("/v1/"+strings.Repeat("a", 195)+"é", "POST", "\xc3", "[::1]:2", []byte(`{"a":"\xff<"}`))
	f.Add("\u2028\x00\"\\", "OPTIONS", "模型\xed\xa0\x80", "", []byte(`{"x":"\u2029"}`))
	key, err := manifests.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, route, method, model, client string, content []byte) {
		path := filepath.Join(t.TempDir(), "audit.log")
		l, err := Open(Options{Path: path, Key: &key})
		if err != nil {
			t.Fatal(err)
		}
		r := Record{RequestID: "req_1", Route: route, Method: method, Model: model, Client: client, Status: 401}
		l.Append(r)
		if json.Valid(content) {
			r.Content = &Content{Request: content}
			l.Append(r)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := Verify([]string{path}, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}}); err != nil {
			data, _ := os.ReadFile(path)
			t.Fatalf("%v\n%s", err, data)
		}
	})
}

// FuzzDecodeRequest holds the verifier's fast decoder to encoding/json: a
// line it reads and that re-encodes to itself (the only lines the verifier
// accepts through it) reads the same through json.Unmarshal.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"seq":3,"kind":"request","time":"2026-11-28T12:00:00.5Z","prev":"ab","requestId":"r","tokenId":"t","client":"1.2.3.4:5","method":"POST","route":"/v1/chat/completions","model":"m","stream":true,"status":200,"latencyMs":812.5,"ttftMs":1e-7,"promptTokens":4,"completionTokens":5}`,
		`{"seq":0,"kind":"start","time":"2026-11-28T12:00:00Z","prev":""}`,
		`{"seq":1,"kind":"request","time":"2026-11-28T12:00:00+01:00","prev":"x","error":"a\"b"}`,
		`{"seq":1,"kind":"request","time":"2026-11-28T12:00:00Z","prev":"x","status":-0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var fast Record
		if !decodeRequest(line, &fast) {
			return
		}
		canon, ok := appendRequest(nil, &fast)
		if !ok || !bytes.Equal(canon, line) {
			return // refused by the verifier's byte comparison
		}
		var slow Record
		if err := json.Unmarshal(line, &slow); err != nil {
			t.Fatalf("fast decoder accepted a line encoding/json refuses: %v\n%s", err, line)
		}
		if !fast.Time.Equal(slow.Time) {
			t.Fatalf("time %v, encoding/json %v\n%s", fast.Time, slow.Time, line)
		}
		fast.Time, slow.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast %+v\nslow %+v\n%s", fast, slow, line)
		}
	})
}

// FuzzVerifyTrusted holds the shortcut for lines a trusted checkpoint covers
// (covered.go) to the full check: on any input, with the trusted key, both
// accept or both refuse with the same error.
func FuzzVerifyTrusted(f *testing.F) {
	key, err := manifests.GenerateKey(bytes.NewReader(make([]byte, 64)))
	if err != nil {
		f.Fatal(err)
	}
	path := filepath.Join(f.TempDir(), "audit.log")
	l, err := Open(Options{Path: path, Key: &key, CheckpointLines: 3, CheckpointEvery: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	for i := range 8 {
		l.Append(Record{RequestID: "r" + string(rune('a'+i)), Route: "/v1/chat/completions", Status: 200, LatencyMs: 2.5})
	}
	if err := l.Flush(); err != nil {
		f.Fatal(err)
	}
	live, _ := os.ReadFile(path)
	l.Close()
	closed, _ := os.ReadFile(path)
	f.Add(live)
	f.Add(closed)
	f.Add(bytes.Replace(live, []byte(`"status":200`), []byte(`"status": 200`), 1))
	f.Add(bytes.Replace(closed, []byte(`"status":200`), []byte(`"status":201`), 2))
	f.Add(bytes.Replace(live, []byte(`"seq":5,`), []byte(`"seq":05,`), 1))
	trust := []manifests.PublicKey{key.Public()}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, live := range []bool{false, true} {
			rep, err := VerifyReader("fuzz", bytes.NewReader(data), VerifyOptions{Trusted: trust, Live: live})
			rep2, err2 := VerifyReader("fuzz", bytes.NewReader(data), VerifyOptions{Trusted: trust, Live: live, fullCheck: true})
			if fmt.Sprint(err) != fmt.Sprint(err2) {
				t.Fatalf("live %v: scanned %v, full check %v\n%s", live, err, err2, data)
			}
			if err == nil && !reflect.DeepEqual(rep, rep2) {
				t.Fatalf("live %v: scanned %+v, full check %+v", live, rep, rep2)
			}
		}
	})
}
