package audit

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"testing"
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
