package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/qwen-appliance/qwen-appliance/manifests"
	"github.com/qwen-appliance/qwen-appliance/provision/runtime"
)

func init() {
	register(&cli.Command{
		Name:      "run",
		Usage:     "start the inference server on localhost, prove it answers, and keep it running",
		UsageText: "qwen-appliance run --bundle DIR --store DIR --trust K.pub [--port N] [--once] [--json]",
		Description: `Checks the bundle's signature and its runtime files, then starts the server the
manifest names (vLLM, a llama.cpp server or Ollama) in the foreground, listening
on --host (loopback only) with telemetry and downloads turned off. The model is
read from --store (the encrypted model store, where 'storage copy-in' put it);
the server's own state and log go to STORE/state/KIND.

"ready" is printed only after the model answered a fixed prompt with tokens,
once plainly and once streamed. When the server exits it is restarted after a
growing delay (1 s, 2 s, 4 s …); after --max-restarts failed restarts in a row
the command gives up with the last lines of the server's log. Ctrl-C stops the
server and everything it started. With --once the server is stopped right
after it proved it answers.

The server runs under a guard (this program again, in the server's process
group, shown as 'qwen-appliance __runtime-guard' in ps): when run dies, even by
SIGKILL, the guard stops the server and everything it started (Ollama's runner,
vLLM's workers), so nothing is left running with PPID 1. SIGHUP never stops
run: it reopens the server's log file (after logrotate moved it) and says so on
stderr. SIGINT and SIGTERM stop the server and exit.

install runs this command as a hardened systemd unit where systemd is PID 1, and
as a detached process under its own supervisor elsewhere; on its own it serves
tests, containers and the demo.

Example:
   qwen-appliance run --bundle ./demo-bundle --store /srv/store --trust release.pub --port 11434`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "bundle", Usage: "the unpacked bundle `DIR` (manifest.json, manifest.sig, runtime/)"},
			&cli.StringFlag{Name: "store", Usage: "the model store `DIR` holding the manifest's model path"},
			&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "loopback address to listen on (127.0.0.1 or ::1)"},
			&cli.IntFlag{Name: "port", Usage: "TCP port (default: the runtime's usual one: vLLM 8000, llama.cpp 8080, Ollama 11434)"},
			&cli.DurationFlag{Name: "ready-timeout", Value: 5 * time.Minute, Usage: "how long the server may take to load the model"},
			&cli.IntFlag{Name: "max-restarts", Value: 5, Usage: "restarts in a row before giving up (0: never restart)"},
			&cli.IntFlag{Name: "context", Usage: "context length in tokens (default: the manifest's)"},
			&cli.IntFlag{Name: "tensor-parallel", Usage: "GPUs the model spans (vLLM; default 1)"},
			&cli.StringSliceFlag{Name: "gpus", Usage: "UUIDs (GPU-…, as nvidia-smi -L prints) of the only GPUs the server may use (default: all it can see)"},
			&cli.Float64Flag{Name: "gpu-memory-utilization", Usage: "share of each GPU's memory (vLLM; default: the manifest's)"},
			&cli.IntFlag{Name: "gpu-layers", Value: -1, Usage: "layers offloaded to the GPU (llama.cpp; -1: all)"},
			&cli.BoolFlag{Name: "once", Usage: "stop the server after it proved it answers, and exit"},
			&cli.BoolFlag{Name: "json", Usage: "print the ready report (and errors) as JSON on stdout"},
		}, trustFlags()...),
		Action: runServer,
	})
}

// runReport is what "run" prints once the server is ready.
type runReport struct {
	Kind         string              `json:"kind"`
	Version      string              `json:"version,omitempty"`
	BaseURL      string              `json:"baseURL"`
	Model        string              `json:"model"`
	PID          int                 `json:"pid"`
	LogFile      string              `json:"logFile"`
	ReadySeconds float64             `json:"readySeconds"`
	Smoke        runtime.SmokeResult `json:"smoke"`
	Stream       runtime.SmokeResult `json:"stream"`
	Stopped      bool                `json:"stopped"`
}

func runServer(c *cli.Context) error {
	bundle, store := c.String("bundle"), c.String("store")
	if bundle == "" || store == "" {
		return usagef("pass --bundle DIR and --store DIR", "--bundle and --store are required")
	}
	if c.NArg() > 0 {
		return usagef("pass directories with --bundle and --store", "unexpected argument %q", c.Args().First())
	}
	restarts := c.Int("max-restarts")
	if restarts < 0 {
		return usagef("--max-restarts takes 0 or more", "--max-restarts %d", restarts)
	}
	if restarts == 0 {
		restarts = -1 // the library's "never restart"
	}
	v, err := verifierFromFlags(c)
	if err != nil {
		return err
	}
	signed, err := v.Open(bundle)
	if err != nil {
		return verificationFailure(err)
	}
	m := signed.Manifest
	if err := checkRuntimeFiles(c, bundle, m); err != nil {
		return err
	}
	gpus := c.StringSlice("gpus")
	if err := runtime.CheckGPUs(gpus, c.Int("tensor-parallel")); err != nil {
		return usagef("pass --gpus as nvidia-smi -L names them (GPU-8f1c…), at least as many as --tensor-parallel", "%v", err)
	}
	cfg := runtime.Config{
		Bundle: bundle, Store: store, Runtime: m.Runtime, Model: m.Model,
		Host: c.String("host"), Port: c.Int("port"),
		Context: c.Int("context"), TensorParallel: c.Int("tensor-parallel"),
		GPUMemoryUtilization: c.Float64("gpu-memory-utilization"), GPULayers: c.Int("gpu-layers"),
		GPUs: gpus,
	}
	if cfg, err = cfg.Abs(); err != nil {
		return err
	}
	if err := checkStoreModel(cfg, m); err != nil {
		return err
	}
	// SIGHUP never ends run (a closed terminal or an operator's reload
	// request must not take the model down): until the server is ready it
	// is noted, afterwards it reopens the server's log.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	starting := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				fmt.Fprintln(c.App.ErrWriter, "qwen-appliance: run: SIGHUP while the server starts: nothing to reload yet")
			case <-starting:
				return
			}
		}
	}()
	guard, err := guardCommand()
	if err != nil {
		close(starting)
		return err
	}
	start := time.Now()
	s, err := runtime.Start(c.Context, runtime.Options{
		Config:       cfg,
		Progress:     prefixWriter{w: c.App.ErrWriter},
		ReadyTimeout: c.Duration("ready-timeout"),
		MaxRestarts:  restarts,
		Guard:        guard,
	})
	close(starting)
	if err != nil {
		return startFailure(err)
	}
	rep := runReport{
		Kind: s.Kind, Version: m.Runtime.Version, BaseURL: s.BaseURL, Model: s.Model, PID: s.PID(), LogFile: s.LogFile,
		ReadySeconds: time.Since(start).Seconds(), Smoke: s.Smoke, Stream: s.Stream,
	}
	if c.Bool("once") {
		if err := s.Stop(); err != nil {
			return err
		}
		rep.Stopped = true
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.App.Writer, "ready: %s serves %q at %s (ready in %s; first answer in %s, %d tokens: %q)\n",
			rep.Kind, rep.Model, rep.BaseURL, time.Duration(rep.ReadySeconds*float64(time.Second)).Round(time.Millisecond),
			rep.Smoke.Total.Round(time.Millisecond), rep.Smoke.CompletionTokens, rep.Smoke.Content)
		if rep.Stopped {
			fmt.Fprintln(c.App.Writer, "stopped (--once)")
		}
	}
	if rep.Stopped {
		return nil
	}
	fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: run: serving until interrupted (pid %d; SIGHUP reopens the log); log: %s\n", os.Getpid(), s.LogFile)
	for done := false; !done; {
		select {
		case <-hup:
			if err := s.ReopenLog(); err != nil {
				fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: run: SIGHUP: %v\n", err)
			} else {
				fmt.Fprintf(c.App.ErrWriter, "qwen-appliance: run: SIGHUP: reopened %s; still serving\n", s.LogFile)
			}
		case <-s.Done():
			done = true
		}
	}
	if err := s.Wait(); err != nil {
		if errors.Is(err, runtime.ErrGaveUp) {
			return withCode(exitError, err, "read the server's log above; fix the cause, then run again (--max-restarts sets the budget)")
		}
		return err
	}
	return nil
}

// guardCommand is how run starts the server: through this same program in
// its guard role (runtime.Guard), so that the server's whole process tree
// goes down with run, even when run is killed with SIGKILL. /proc/self/exe
// is the running binary itself, even after an upgrade replaced or removed
// the file it was started from (a restart of the server then still works).
func guardCommand() ([]string, error) {
	if _, err := os.Stat("/proc/self/exe"); err == nil {
		return []string{"/proc/self/exe", runtime.GuardArg}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, withCode(exitError, fmt.Errorf("find this program to start the server's guard: %w", err), "run qwen-appliance by its path")
	}
	return []string{exe, runtime.GuardArg}, nil
}

// checkRuntimeFiles checks that every file of the bundle is there with its
// signed size and mode, and hashes the runtime's files (the server binary and
// its libraries) in full: those are what run executes. The model itself is
// read from the store; install and 'audit verify' hash it.
func checkRuntimeFiles(c *cli.Context, bundle string, m *manifests.Manifest) error {
	err := manifests.CheckFiles(c.Context, bundle, m, manifests.CheckOptions{
		StoreModes: true, // an installed bundle is the store's strict 0400/0500 copy,
		// and the server keeps its own state beside it (STORE/state/KIND)
		IgnoreExtra: []string{"state"},
		Select: func(f manifests.File) []int {
			if !strings.HasPrefix(f.Path, "runtime/") {
				return []int{}
			}
			all := make([]int, len(f.Chunks))
			for i := range all {
				all[i] = i
			}
			return all
		},
	})
	if err != nil {
		return verificationFailure(err)
	}
	return nil
}

// checkStoreModel makes sure the store holds the model with its signed size
// before a server is started on it; a missing model otherwise surfaces as a
// server's load error.
func checkStoreModel(cfg runtime.Config, m *manifests.Manifest) error {
	path, err := cfg.ModelPath()
	if err != nil {
		return withCode(exitVerification, err, "the manifest's runtime.modelPath is unusable: rebuild the bundle")
	}
	var want int64
	var isDir bool
	for _, f := range m.Files {
		if f.Path == m.Runtime.ModelPath {
			want = f.Size
		} else if strings.HasPrefix(f.Path, m.Runtime.ModelPath+"/") {
			isDir = true
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		return withCode(exitError, fmt.Errorf("model in the store: %w", err),
			fmt.Sprintf("copy the model into --store first (it belongs at %s)", filepath.Join(cfg.Store, filepath.FromSlash(m.Runtime.ModelPath))))
	}
	if !isDir && want > 0 && st.Size() != want {
		return withCode(exitVerification, fmt.Errorf("model in the store: %s is %d bytes, the manifest says %d", path, st.Size(), want),
			"copy the model into --store again from the verified bundle")
	}
	return nil
}

func verificationFailure(err error) error {
	if errors.Is(err, manifests.ErrVerification) {
		return withCode(exitVerification, err, verificationHint(err))
	}
	return withCode(exitError, err, "check --bundle: it must be a bundle directory with manifest.json and manifest.sig")
}

func startFailure(err error) error {
	var se *runtime.StartError
	logHint := ""
	if errors.As(err, &se) && se.LogFile != "" {
		logHint = "; the server's full log is " + se.LogFile
	}
	switch {
	case errors.Is(err, runtime.ErrNotLoopback):
		return withCode(exitUsage, err, "--host takes a loopback address only (127.0.0.1 or ::1); the gateway serves the network")
	case errors.Is(err, runtime.ErrPortInUse):
		return withCode(exitError, err, "pass another --port, or stop what listens there")
	case errors.Is(err, runtime.ErrNoBinary):
		return withCode(exitError, err, "the bundle carries no server binary there: rebuild it with the runtime artefact (bundle create --artifact)")
	case errors.Is(err, runtime.ErrUnknownKind):
		return withCode(exitError, err, "the manifest's runtime.kind names a server this version cannot run")
	}
	return withCode(exitError, err, "the server did not come up; its last log lines are above"+logHint)
}

// prefixWriter marks the supervisor's progress lines as this command's.
type prefixWriter struct {
	w interface{ Write([]byte) (int, error) }
}

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := fmt.Fprintf(p.w, "qwen-appliance: run: %s", b); err != nil {
		return 0, err
	}
	return len(b), nil
}
