package main

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// ollamaserve HOST:PORT starts "$OLLAMA serve" on that loopback address
// with its models under $WORK/models, in a process group of its own, and
// waits until it answers. The whole group (serve and the runners it
// starts) is killed when the script ends, passed or failed: a runner left
// behind would hold the script's output open.
func cmdOllamaServe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: ollamaserve HOST:PORT")
	}
	work := ts.Getenv("WORK")
	log, err := os.Create(filepath.Join(work, "ollama.log"))
	ts.Check(err)
	cmd := exec.Command(ts.Getenv("OLLAMA"), "serve")
	cmd.Env = append(os.Environ(), "OLLAMA_HOST="+args[0], "OLLAMA_MODELS="+filepath.Join(work, "models"), "HOME="+work, "OLLAMA_NOPRUNE=1")
	cmd.Dir, cmd.Stdout, cmd.Stderr = work, log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ts.Check(cmd.Start())
	ts.Defer(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		log.Close()
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + args[0] + "/"); err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(work, "ollama.log"))
			ts.Fatalf("ollama serve did not answer on %s: %s", args[0], b)
		}
	}
}
