package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// Runtime kinds, as a manifest's runtime.kind names them.
const (
	KindVLLM     = "vllm"
	KindLlamaCpp = "llama.cpp"
	KindOllama   = "ollama"
)

// ErrNotLoopback is returned when a configuration asks a server to listen on
// anything but a loopback address.
var ErrNotLoopback = errors.New("servers listen on loopback only")

// ErrUnknownKind is returned by For for a runtime kind no adapter serves.
var ErrUnknownKind = errors.New("unknown runtime kind")

// Config is what an adapter needs to launch a server: where the bundle and the
// model store are, what the manifest says, and what the host's preflight
// decided. Paths in the manifest are relative to Bundle (artefacts) and Store
// (the model and the server's own state).
type Config struct {
	Bundle  string            // bundle root: the server's artefacts
	Store   string            // model store root (encrypted storage): model and state
	Runtime manifests.Runtime // from the manifest
	Model   manifests.Model   // from the manifest

	Host string // a literal loopback address; 127.0.0.1 when empty
	Port int    // the adapter's usual port when 0

	Context              int     // tokens of context; the manifest's default when 0
	TensorParallel       int     // GPUs one model spans (vLLM); 1 when 0
	GPUMemoryUtilization float64 // share of each GPU's memory (vLLM); the manifest's when 0
	GPULayers            int     // layers offloaded to the GPU (llama.cpp); -1 means all
	// GPUs are the UUIDs of the only GPUs the server may use (the preflight
	// plan's tensor-parallel group); all it can see when empty.
	GPUs []string
}

// Command is one process to run: absolute executable path, arguments
// (without argv[0]), the complete environment, and the working directory.
type Command struct {
	Path string
	Args []string
	Env  []string
	Dir  string
}

// Endpoints are the HTTP paths a server answers on; an empty path means the
// server has no such endpoint.
type Endpoints struct {
	Health  string // 200 once the server process is up
	Models  string // OpenAI-style model list; lists the served model once ready
	Metrics string // Prometheus text format
	Chat    string // OpenAI chat completions
}

// Adapter knows how to run one kind of inference server.
type Adapter interface {
	// Kind is the manifest's runtime.kind for this server.
	Kind() string
	// DefaultPort is the port the server uses when Config.Port is 0.
	DefaultPort() int
	// Install returns the commands that make the bundled artefacts runnable
	// on this host without network (nothing when the bundle carries a
	// ready binary).
	Install(c Config) ([]Command, error)
	// Command returns the server's launch command. It fails with
	// ErrNotLoopback for any host that is not a loopback address.
	Command(c Config) (Command, error)
	// Endpoints are the server's HTTP paths.
	Endpoints() Endpoints
	// Prepare runs once the server answers its health endpoint and before
	// readiness is checked: Ollama imports the model here.
	Prepare(ctx context.Context, c Config, log io.Writer) error
}

// For returns the adapter for a runtime kind.
func For(kind string) (Adapter, error) {
	switch kind {
	case KindVLLM:
		return vllm{}, nil
	case KindLlamaCpp:
		return llamaCpp{}, nil
	case KindOllama:
		return ollama{}, nil
	}
	return nil, fmt.Errorf("runtime kind %q: %w (want %s, %s or %s)", kind, ErrUnknownKind, KindVLLM, KindLlamaCpp, KindOllama)
}

// Listen returns the host and port the server will listen on, refusing any
// host that is not a literal loopback address. Names such as "localhost" are
// refused too: what they resolve to is up to /etc/hosts.
func (c Config) Listen(defaultPort int) (host string, port int, err error) {
	host, port = c.Host, c.Port
	if host == "" {
		host = "127.0.0.1"
	}
	addr, perr := netip.ParseAddr(host)
	if perr != nil || !addr.IsLoopback() || addr.Zone() != "" {
		return "", 0, fmt.Errorf("host %q: %w (use 127.0.0.1 or ::1)", c.Host, ErrNotLoopback)
	}
	if port == 0 {
		port = defaultPort
	}
	if port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %d: not between 1 and 65535", port)
	}
	return addr.String(), port, nil
}

// hostPort joins host and port, bracketing IPv6 addresses.
func hostPort(host string, port int) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// BaseURL is the server's HTTP root for a host and port from Listen.
func BaseURL(host string, port int) string { return "http://" + hostPort(host, port) }

// checkPaths requires absolute bundle and store paths: the server runs in its
// state directory, where relative paths would point elsewhere.
func (c Config) checkPaths() error {
	for name, p := range map[string]string{"bundle": c.Bundle, "store": c.Store} {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("%s directory %q: not an absolute path", name, p)
		}
	}
	return nil
}

// Abs returns c with absolute bundle and store paths.
func (c Config) Abs() (Config, error) {
	var err error
	if c.Bundle, err = filepath.Abs(c.Bundle); err != nil {
		return c, err
	}
	c.Store, err = filepath.Abs(c.Store)
	return c, err
}

// bundlePath resolves a bundle-relative artefact path, refusing paths that
// would leave the bundle.
func (c Config) bundlePath(rel, def string) (string, error) {
	if err := c.checkPaths(); err != nil {
		return "", err
	}
	if rel == "" {
		rel = def
	}
	if err := manifests.ValidatePath(rel); err != nil {
		return "", fmt.Errorf("runtime entrypoint %q: %w", rel, err)
	}
	return filepath.Join(c.Bundle, filepath.FromSlash(rel)), nil
}

// ModelPath is the model's path inside the store.
func (c Config) ModelPath() (string, error) {
	if err := c.checkPaths(); err != nil {
		return "", err
	}
	rel := c.Runtime.ModelPath
	if rel == "" {
		return "", errors.New("runtime.modelPath: empty in the manifest")
	}
	if err := manifests.ValidatePath(rel); err != nil {
		return "", fmt.Errorf("runtime.modelPath %q: %w", rel, err)
	}
	return filepath.Join(c.Store, filepath.FromSlash(rel)), nil
}

// StateDir is where a server keeps its own state and logs, inside the store.
// It is "state/KIND", apart from the bundle's own runtime/ artefacts, so an
// installed release can be both the bundle and the store.
func (c Config) StateDir(kind string) string {
	return filepath.Join(c.Store, "state", strings.ReplaceAll(kind, ".", ""))
}

// ServedModelName is the name clients ask for; "model" when the manifest has none.
func (c Config) ServedModelName() string {
	if c.Runtime.ServedModelName != "" {
		return c.Runtime.ServedModelName
	}
	return "model"
}

func (c Config) context() int {
	if c.Context > 0 {
		return c.Context
	}
	return c.Runtime.DefaultContext
}

// baseEnv is the environment every server starts with: nothing inherited
// from the caller (no proxies, no tokens, no cache paths), every opt-out of
// telemetry and downloads that any of the servers or their libraries read,
// and, when c names GPUs, only those visible to CUDA (by UUID, which no
// enumeration order can change).
func baseEnv(c Config, home string) map[string]string {
	env := map[string]string{
		"PATH":                     "/usr/local/bin:/usr/bin:/bin",
		"HOME":                     home,
		"LANG":                     "C.UTF-8",
		"TMPDIR":                   filepath.Join(home, "tmp"),
		"DO_NOT_TRACK":             "1",
		"HF_HUB_OFFLINE":           "1",
		"HF_HUB_DISABLE_TELEMETRY": "1",
		"TRANSFORMERS_OFFLINE":     "1",
	}
	if len(c.GPUs) > 0 {
		env["CUDA_VISIBLE_DEVICES"] = strings.Join(c.GPUs, ",")
		env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
	}
	return env
}

// envList renders an environment map sorted by name, so launch commands are
// stable and golden-testable.
func envList(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Dirs returns the directories Command's process needs to exist and be
// writable: its state directory and TMPDIR.
func Dirs(cmd Command) []string {
	var dirs []string
	for _, kv := range cmd.Env {
		if k, v, _ := strings.Cut(kv, "="); k == "HOME" || k == "TMPDIR" || k == "OLLAMA_MODELS" {
			dirs = append(dirs, v)
		}
	}
	if cmd.Dir != "" {
		dirs = append(dirs, cmd.Dir)
	}
	return dirs
}

// gpuUUID is how NVML and nvidia-smi name a GPU or a MIG instance.
var gpuUUID = regexp.MustCompile(`^(GPU|MIG)-[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$`)

// CheckGPUs refuses a GPU list that is not UUIDs, names one twice, or is
// shorter than the tensor-parallel degree (tp, 0 for the default of 1).
func CheckGPUs(uuids []string, tp int) error {
	seen := map[string]bool{}
	for _, u := range uuids {
		if !gpuUUID.MatchString(u) {
			return fmt.Errorf("GPU %q is not a UUID such as GPU-8f1c2a3b-0d4e-5f60-7a8b-9c0d1e2f3a4b", u)
		}
		if seen[u] {
			return fmt.Errorf("GPU %s is named twice", u)
		}
		seen[u] = true
	}
	if len(uuids) > 0 && tp > len(uuids) {
		return fmt.Errorf("tensor parallel %d needs %d GPUs, but only %d are named", tp, tp, len(uuids))
	}
	return nil
}
