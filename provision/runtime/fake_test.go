package runtime

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeEnv switches the test binary into a fake llama-server: the failure
// tests need a server that dies on cue, which no real one does.
const fakeEnv = "QWA_FAKE_LLAMA_SERVER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(fakeEnv); mode != "" {
		os.Exit(fakeServer(mode, os.Args[1:]))
	}
	if len(os.Args) > 1 && os.Args[1] == GuardArg {
		os.Exit(Guard(os.Args[2:]))
	}
	if cfg := os.Getenv(superviseEnv); cfg != "" {
		os.Exit(supervise(cfg))
	}
	os.Exit(m.Run())
}

// fakeServer reads llama-server's flags as the llama.cpp adapter writes
// them, refuses to run without --offline, --no-slots and a loopback --host,
// and answers /health, /v1/models and /v1/chat/completions. mode is a comma
// list: "die-after-smoke" exits with status 3 shortly after answering both
// smoke tests; "ignore-term" ignores SIGTERM; "no-model" lists another model;
// "exit" fails at once; "child" starts a sleeping child process in its
// process group.
func fakeServer(mode string, args []string) int {
	fs := flag.NewFlagSet("llama-server", flag.ContinueOnError)
	model := fs.String("model", "", "")
	alias := fs.String("alias", "", "")
	host := fs.String("host", "", "")
	port := fs.Int("port", 0, "")
	offline := fs.Bool("offline", false, "")
	fs.Bool("metrics", false, "")
	noSlots := fs.Bool("no-slots", false, "")
	fs.Int("n-gpu-layers", 0, "")
	fs.Int("ctx-size", 0, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if !*offline || !*noSlots || *host != "127.0.0.1" || *model == "" {
		fmt.Fprintf(os.Stderr, "fake llama-server: refusing argv %q\n", args)
		return 2
	}
	ignoreTerm, listed, dieAfterSmoke := false, *alias, false
	var answers atomic.Int32
	for _, m := range strings.Split(mode, ",") {
		switch {
		case m == "die-after-smoke":
			dieAfterSmoke = true
		case m == "ignore-term":
			ignoreTerm = true
		case m == "no-model":
			listed = "some-other-model"
		case m == "child":
			if err := exec.Command("sleep", "300").Start(); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		case m == "exit":
			fmt.Fprintln(os.Stderr, "fake llama-server: error loading model: invalid magic")
			return 1
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"status":"ok"}`) })
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"data": []map[string]string{{"id": listed}}})
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream bool `json:"stream"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if dieAfterSmoke && answers.Add(1) == 2 { // the plain and the streamed smoke test
			time.AfterFunc(100*time.Millisecond, func() {
				fmt.Fprintln(os.Stderr, "fake llama-server: simulated crash")
				os.Exit(3)
			})
		}
		if !req.Stream {
			fmt.Fprint(w, `{"choices":[{"message":{"role":"assistant","content":"ready"}}],"usage":{"completion_tokens":1}}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"delta\":{\"content\":\"rea\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"dy\"}}]}\n\ndata: [DONE]\n\n")
	})
	srv := &http.Server{Addr: fmt.Sprintf("%s:%d", *host, *port), Handler: mux}
	term := make(chan os.Signal, 1)
	if ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(term, syscall.SIGTERM)
	}
	go func() {
		<-term
		srv.Close()
	}()
	fmt.Fprintf(os.Stderr, "fake llama-server: listening on %s\n", srv.Addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// fakeBundle writes a bundle whose llama-server is a shell script running
// this test binary as the fake server in mode, and a store holding a model
// file; it returns a configuration for them.
func fakeBundle(t *testing.T, mode string) Config {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle, store := filepath.Join(dir, "bundle"), filepath.Join(dir, "store")
	bin := filepath.Join(bundle, filepath.FromSlash(LlamaCppEntrypoint))
	script := fmt.Sprintf("#!/bin/sh\n%s=%q exec %q \"$@\"\n", fakeEnv, mode, self)
	writeFile(t, bin, script, 0o755)
	writeFile(t, filepath.Join(store, "model", "fake.gguf"), "GGUF", 0o644)
	c := Config{Bundle: bundle, Store: store, Port: freePort(t)}
	c.Runtime.Kind = KindLlamaCpp
	c.Runtime.ModelPath = "model/fake.gguf"
	c.Runtime.ServedModelName = "fake"
	return c
}

func writeFile(t testing.TB, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}
