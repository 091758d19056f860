package runtime

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// vllm runs vLLM's OpenAI-compatible server.
//
// The bundle carries vLLM as an offline wheelhouse: one tar archive
// (VLLMWheelhouse) holding every wheel vLLM needs for the target Python and
// CUDA, and a requirements.txt at its root that pins each one by version and
// SHA-256. Install unpacks it inside the store, creates a virtual environment
// there and installs from the wheelhouse with pip's --no-index, so nothing is
// fetched; --require-hashes makes pip refuse any wheel whose hash differs
// from the pinned one. It needs only the host's python3 (with venv) of the
// version the wheels were built for, not a container runtime.
type vllm struct{}

// VLLMWheelhouse is where a bundle carries vLLM's wheelhouse archive.
const VLLMWheelhouse = "runtime/vllm-wheelhouse.tar"

func (vllm) Kind() string     { return KindVLLM }
func (vllm) DefaultPort() int { return 8000 }

// Endpoints: /health answers 200, or 503 once the engine has died.
func (vllm) Endpoints() Endpoints {
	return Endpoints{Health: "/health", Models: "/v1/models", Metrics: "/metrics", Chat: "/v1/chat/completions"}
}

func (vllm) Prepare(context.Context, Config, io.Writer) error { return nil }

func (v vllm) venv(c Config) string { return filepath.Join(c.StateDir(KindVLLM), "venv") }

// Install unpacks the wheelhouse, creates the virtual environment and
// installs vLLM into it, offline.
func (v vllm) Install(c Config) ([]Command, error) {
	archive, err := c.bundlePath(VLLMWheelhouse, "")
	if err != nil {
		return nil, err
	}
	state := c.StateDir(KindVLLM)
	wheels := filepath.Join(state, "wheelhouse")
	env := envList(v.env(c, state))
	venv := v.venv(c)
	return []Command{
		{Path: "/usr/bin/mkdir", Args: []string{"-p", wheels}, Env: env, Dir: state},
		{Path: "/usr/bin/tar", Args: []string{"-x", "-f", archive, "-C", wheels, "--no-same-owner", "--no-same-permissions"}, Env: env, Dir: state},
		{Path: "/usr/bin/python3", Args: []string{"-m", "venv", venv}, Env: env, Dir: state},
		{Path: filepath.Join(venv, "bin", "python"), Args: []string{
			"-m", "pip", "install", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
			"--find-links", wheels, "--require-hashes", "--requirement", filepath.Join(wheels, "requirements.txt"),
		}, Env: env, Dir: state},
	}, nil
}

func (vllm) env(c Config, state string) map[string]string {
	env := baseEnv(c, filepath.Join(state, "home"))
	env["VLLM_NO_USAGE_STATS"] = "1"
	env["VLLM_DO_NOT_TRACK"] = "1"
	// Where vLLM binds its own helper sockets (tensor-parallel rendezvous).
	env["VLLM_HOST_IP"] = "127.0.0.1"
	env["HF_HOME"] = filepath.Join(state, "hf")
	env["VLLM_CACHE_ROOT"] = filepath.Join(state, "cache")
	env["PIP_NO_INDEX"] = "1"
	return env
}

func (v vllm) Command(c Config) (Command, error) {
	host, port, err := c.Listen(v.DefaultPort())
	if err != nil {
		return Command{}, err
	}
	model, err := c.ModelPath()
	if err != nil {
		return Command{}, err
	}
	tp := max(c.TensorParallel, 1)
	util := c.GPUMemoryUtilization
	if util == 0 {
		util = c.Runtime.GPUMemoryUtilization
	}
	if util < 0 || util > 1 {
		return Command{}, fmt.Errorf("gpu memory utilization %v: not between 0 and 1", util)
	}
	args := []string{
		"-m", "vllm.entrypoints.openai.api_server",
		"--model", model,
		"--served-model-name", c.ServedModelName(),
		"--host", host,
		"--port", strconv.Itoa(port),
		"--tensor-parallel-size", strconv.Itoa(tp),
		"--dtype", vllmDtype(c.Model.Dtype),
		// The HTTP access log names every request's client and path;
		// warnings and errors still reach the log.
		"--uvicorn-log-level", "warning",
	}
	// Request logging (prompts included) is on by default before 0.10.2 and
	// off after, when --disable-log-requests went away.
	if versionBefore(c.Runtime.Version, 0, 10, 2) {
		args = append(args, "--disable-log-requests")
	}
	if n := c.context(); n > 0 {
		args = append(args, "--max-model-len", strconv.Itoa(n))
	}
	if util > 0 {
		args = append(args, "--gpu-memory-utilization", strconv.FormatFloat(util, 'f', -1, 64))
	}
	if kv := c.Model.KVCacheDtype; strings.HasPrefix(kv, "fp8") {
		args = append(args, "--kv-cache-dtype", kv)
	}
	state := c.StateDir(KindVLLM)
	return Command{Path: filepath.Join(v.venv(c), "bin", "python"), Args: args, Env: envList(v.env(c, state)), Dir: state}, nil
}

// vllmDtype maps a manifest dtype to vLLM's --dtype; quantized weights carry
// their own and take "auto".
func vllmDtype(d string) string {
	switch d {
	case "bf16":
		return "bfloat16"
	case "f16", "fp16":
		return "float16"
	case "f32", "fp32":
		return "float32"
	}
	return "auto"
}

// versionBefore reports whether a dotted version (e.g. "0.6.3.post1") is
// older than major.minor.patch; versions it cannot read count as new.
func versionBefore(v string, major, minor, patch int) bool {
	var got [3]int
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 4)
	if len(parts) < 3 {
		return false
	}
	for i := range 3 {
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return false
		}
		got[i] = n
	}
	want := [3]int{major, minor, patch}
	for i := range 3 {
		if got[i] != want[i] {
			return got[i] < want[i]
		}
	}
	return false
}
