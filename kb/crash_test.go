package kb

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCrashMidIngest kills a process that is ingesting (SIGKILL, no
// cleanup) at several moments, and checks that every document the database
// then holds is whole: it has its access list, and its stored chunks hash
// to what its ingest recorded. No half-written document is ever visible.
func TestCrashMidIngest(t *testing.T) {
	if p := os.Getenv("KB_CRASH_CHILD"); p != "" {
		crashChild(p)
		return
	}
	if testing.Short() {
		t.Skip("starts and kills subprocesses")
	}
	for _, delay := range []time.Duration{150 * time.Millisecond, 400 * time.Millisecond, 900 * time.Millisecond} {
		path := filepath.Join(t.TempDir(), "kb.db")
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidIngest$")
		cmd.Env = append(os.Environ(), "KB_CRASH_CHILD="+path)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(delay)
		cmd.Process.Kill()
		cmd.Wait()
		k, err := Open(path)
		if err != nil {
			t.Fatalf("after a kill at %v: %v", delay, err)
		}
		probs, err := k.Check(context.Background(), CheckOptions{UID: -1})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range probs {
			if p.Check != "mode" { // the temp directory's mode is not ours to judge
				t.Errorf("after a kill at %v: %s: %s", delay, p.Check, p.Detail)
			}
		}
		docs, _ := k.List(context.Background())
		t.Logf("killed at %v: %d whole documents", delay, len(docs))
		k.Close()
	}
}

// crashChild ingests large documents, and re-ingests them changed, until
// it is killed.
func crashChild(path string) {
	k, err := Open(path)
	if err != nil {
		os.Exit(1)
	}
	body := strings.Repeat("员工守则的条款内容，用来填充一个较大的文档。", 2000)
	for i := 0; ; i++ {
		text := fmt.Sprintf("第%d版。", i) + body
		_, err := k.Put(context.Background(), Document{Title: "t", Source: fmt.Sprint("doc", i%3), Format: "text",
			Allow: []Principal{All}, Raw: []byte(text), Sections: []Section{{Text: text}}}, ChunkOptions{})
		if err != nil {
			os.Exit(1)
		}
	}
}
