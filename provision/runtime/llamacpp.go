package runtime

import (
	"context"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// llamaCpp runs llama.cpp's llama-server. The bundle carries the server
// binary with its shared libraries beside it; the model is a GGUF file in the
// store.
type llamaCpp struct{}

// LlamaCppEntrypoint is where a bundle carries llama-server by default.
const LlamaCppEntrypoint = "runtime/llama-server"

func (llamaCpp) Kind() string                      { return KindLlamaCpp }
func (llamaCpp) DefaultPort() int                  { return 8080 }
func (llamaCpp) Install(Config) ([]Command, error) { return nil, nil }

// Endpoints: /health answers 503 while the model loads and 200 once ready.
func (llamaCpp) Endpoints() Endpoints {
	return Endpoints{Health: "/health", Models: "/v1/models", Metrics: "/metrics", Chat: "/v1/chat/completions"}
}

func (llamaCpp) Prepare(context.Context, Config, io.Writer) error { return nil }

func (l llamaCpp) Command(c Config) (Command, error) {
	host, port, err := c.Listen(l.DefaultPort())
	if err != nil {
		return Command{}, err
	}
	bin, err := c.bundlePath(c.Runtime.Entrypoint, LlamaCppEntrypoint)
	if err != nil {
		return Command{}, err
	}
	model, err := c.ModelPath()
	if err != nil {
		return Command{}, err
	}
	args := []string{
		"--model", model,
		"--alias", c.ServedModelName(),
		"--host", host,
		"--port", strconv.Itoa(port),
		"--metrics",
		"--no-slots", // /slots shows other users' prompts
		"--n-gpu-layers", strconv.Itoa(gpuLayers(c.GPULayers)),
	}
	if n := c.context(); n > 0 {
		args = append(args, "--ctx-size", strconv.Itoa(n))
	}
	// --offline (build b5500 on) refuses any download; older builds have no
	// such flag, and with a local --model path download nothing anyway.
	if n, ok := buildNumber(c.Runtime.Version); !ok || n >= offlineSince {
		args = append(args, "--offline")
	}
	state := c.StateDir(KindLlamaCpp)
	env := baseEnv(c, filepath.Join(state, "home"))
	env["LD_LIBRARY_PATH"] = filepath.Dir(bin)
	// llama.cpp's own download cache, in case anything ever asks for one.
	env["LLAMA_CACHE"] = filepath.Join(state, "cache")
	return Command{Path: bin, Args: args, Env: envList(env), Dir: state}, nil
}

// gpuLayers maps Config.GPULayers to llama-server's --n-gpu-layers: negative
// means every layer (llama.cpp caps a large count at the model's layers).
func gpuLayers(n int) int {
	if n < 0 {
		return 999
	}
	return n
}

// offlineSince is the first llama.cpp build with --offline (May 2025).
const offlineSince = 5500

// buildNumber reads a llama.cpp release tag such as "b4698".
func buildNumber(v string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(v, "b"))
	if err != nil || !strings.HasPrefix(v, "b") {
		return 0, false
	}
	return n, true
}
