package audit

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// TestKilledWriter kills a real writer process with SIGKILL while it
// appends large records (each written in several write calls), until a kill
// lands in the middle of a line, as the OOM killer can. The next writer
// must then repair the file, and the whole log verify.
func TestKilledWriter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills writer processes")
	}
	key, err := manifests.GenerateKey(nil)
	must(t, err)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "audit")
	must(t, manifests.WriteKeyPair(keyFile, key, "audit"))
	for try := 1; try <= 10; try++ {
		path := filepath.Join(dir, "audit-"+string(rune('a'+try))+".log")
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriterProcess$")
		cmd.Env = append(os.Environ(), "QWA_AUDIT_WRITER="+path, "QWA_AUDIT_WRITER_KEY="+keyFile+".key")
		cmd.Stderr = os.Stderr
		must(t, cmd.Start())
		// Once it has written a few megabytes, kill it the moment the file
		// is seen ending inside a line: a line of 600 KiB goes out in
		// several writes.
		deadline := time.Now().Add(20 * time.Second)
		for !endsInsideLine(path, 2<<20) {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal("the writer was never seen in the middle of a line in 20 s")
			}
		}
		must(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()
		data := readFile(t, path)
		if data[len(data)-1] == '\n' {
			continue // the line was finished before the kill landed
		}
		l, err := Open(Options{Path: path, Key: &key})
		if err != nil {
			t.Fatalf("try %d: open after the kill: %v", try, err)
		}
		l.Append(Record{RequestID: "after", Status: 200})
		must(t, l.Close())
		rep, err := Verify([]string{path}, VerifyOptions{Trusted: []manifests.PublicKey{key.Public()}})
		if err != nil || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "incomplete line") {
			t.Fatalf("try %d: verify after the repair: %+v %v", try, rep, err)
		}
		torn, _ := filepath.Glob(path + ".torn-*")
		if len(torn) != 1 || !bytes.HasSuffix(data, readFile(t, torn[0])) {
			t.Fatalf("try %d: torn files %v do not hold the end the kill left", try, torn)
		}
		t.Logf("try %d: the kill left %d bytes of a line; repaired", try, len(readFile(t, torn[0])))
		return
	}
	t.Skip("no kill in 10 landed in the middle of a line")
}

// endsInsideLine reports whether the file at path is longer than min and
// its last byte is not a newline.
func endsInsideLine(path string, min int64) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() <= min {
		return false
	}
	b := make([]byte, 1)
	_, err = f.ReadAt(b, st.Size()-1)
	return err == nil && b[0] != '\n'
}

// TestWriterProcess is the writer TestKilledWriter starts: it appends
// records with 600 KiB of content each until it is killed.
func TestWriterProcess(t *testing.T) {
	path := os.Getenv("QWA_AUDIT_WRITER")
	if path == "" {
		t.Skip("run by TestKilledWriter")
	}
	key, err := manifests.LoadPrivateKey(os.Getenv("QWA_AUDIT_WRITER_KEY"))
	must(t, err)
	l, err := Open(Options{Path: path, Key: &key})
	must(t, err)
	body, _ := json.Marshal(map[string]string{"prompt": strings.Repeat("x", 600<<10)})
	for {
		l.Append(Record{RequestID: "r", Status: 200, Content: &Content{Request: body}})
	}
}
