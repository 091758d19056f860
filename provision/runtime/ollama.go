package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// ollama runs Ollama's server. The bundle carries the single ollama binary;
// the model is imported into an Ollama model directory inside the store from
// the bundle's GGUF file, through the local server, without any registry.
type ollama struct{}

// OllamaEntrypoint is where a bundle carries the ollama binary by default.
const OllamaEntrypoint = "runtime/ollama"

func (ollama) Kind() string                      { return KindOllama }
func (ollama) DefaultPort() int                  { return 11434 }
func (ollama) Install(Config) ([]Command, error) { return nil, nil }

// Endpoints: Ollama answers "Ollama is running" on /, has no metrics.
func (ollama) Endpoints() Endpoints {
	return Endpoints{Health: "/", Models: "/v1/models", Chat: "/v1/chat/completions"}
}

func (o ollama) Command(c Config) (Command, error) {
	host, port, err := c.Listen(o.DefaultPort())
	if err != nil {
		return Command{}, err
	}
	bin, err := c.bundlePath(c.Runtime.Entrypoint, OllamaEntrypoint)
	if err != nil {
		return Command{}, err
	}
	state := c.StateDir(KindOllama)
	env := o.env(c, state, host, port)
	return Command{Path: bin, Args: []string{"serve"}, Env: envList(env), Dir: state}, nil
}

func (ollama) env(c Config, state, host string, port int) map[string]string {
	env := baseEnv(c, filepath.Join(state, "home"))
	env["OLLAMA_HOST"] = hostPort(host, port)
	env["OLLAMA_MODELS"] = filepath.Join(state, "models")
	env["OLLAMA_NOPRUNE"] = "1"
	// The appliance serves one model: keep it loaded instead of unloading it
	// after five idle minutes and paying the load again.
	env["OLLAMA_KEEP_ALIVE"] = "-1"
	env["OLLAMA_NOHISTORY"] = "1"
	if n := c.context(); n > 0 {
		env["OLLAMA_CONTEXT_LENGTH"] = strconv.Itoa(n)
	}
	if c.Model.KVCacheDtype == "q8_0" || c.Model.KVCacheDtype == "q4_0" {
		env["OLLAMA_KV_CACHE_TYPE"] = c.Model.KVCacheDtype
	}
	return env
}

// modelfileSafe refuses paths that would break out of the Modelfile's quoted
// FROM line.
var modelfileSafe = regexp.MustCompile(`^[^"\\\n\r]+$`)

// ansi matches terminal control sequences in ollama's progress output.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// Prepare imports the bundle's GGUF under the served model name with
// "ollama create", which talks to the local server only.
func (o ollama) Prepare(ctx context.Context, c Config, log io.Writer) error {
	cmd, err := o.Command(c)
	if err != nil {
		return err
	}
	model, err := c.ModelPath()
	if err != nil {
		return err
	}
	if !modelfileSafe.MatchString(model) {
		return fmt.Errorf("model path %q: quotes, backslashes and line breaks are not allowed", model)
	}
	if _, err := os.Stat(model); err != nil {
		return fmt.Errorf("import model: %w", err)
	}
	modelfile := filepath.Join(cmd.Dir, "Modelfile")
	if err := os.WriteFile(modelfile, []byte("FROM \""+model+"\"\n"), 0o600); err != nil {
		return fmt.Errorf("import model: %w", err)
	}
	var out bytes.Buffer
	create := exec.CommandContext(ctx, cmd.Path, "create", c.ServedModelName(), "-f", modelfile)
	create.Env, create.Dir = cmd.Env, cmd.Dir
	create.Stdout, create.Stderr = &out, &out
	setProcessGroup(create, false)
	err = create.Run()
	text := strings.TrimSpace(ansi.ReplaceAllString(out.String(), ""))
	if log != nil && text != "" {
		fmt.Fprintln(log, text)
	}
	if err != nil {
		return fmt.Errorf("import model %s into ollama: %w: %s", model, err, lastLines(text, 5))
	}
	// Ollama makes its blobs and manifests 0644 whatever the umask; in the
	// encrypted store only the service user may read anything.
	if err := privatize(cmd.Dir); err != nil {
		return fmt.Errorf("import model: %w", err)
	}
	return o.load(ctx, c)
}

// privatize removes group and other permissions from everything under dir.
func privatize(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if perm := info.Mode().Perm(); perm&0o077 != 0 {
			return os.Chmod(p, perm&^0o077)
		}
		return nil
	})
}

// load asks Ollama to load the model now (a generate request without a
// prompt), so that a model that cannot load fails here, naming the step,
// rather than at the first request; Ollama otherwise loads lazily.
func (o ollama) load(ctx context.Context, c Config) error {
	host, port, err := c.Listen(o.DefaultPort())
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"model": c.ServedModelName(), "keep_alive": -1})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, BaseURL(host, port)+"/api/generate", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("load model: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("load model: %s: %s", resp.Status, lastLines(string(msg), 3))
	}
	return nil
}
