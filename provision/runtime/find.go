package runtime

import (
	"os"
	"os/exec"
	"path/filepath"
)

// FindOllama returns the Ollama that scripts/build-ollama.sh builds for the
// CPU path: $QWA_OLLAMA, else the per-machine cache ($QWA_CACHE, default
// ~/.cache/qwen-appliance)/ollama-v0.6.5/bin/ollama, else ollama on PATH; ""
// when there is none. Tests and the demo use it; installs run the binary the
// bundle carries.
func FindOllama() string {
	if p := os.Getenv("QWA_OLLAMA"); p != "" {
		return p
	}
	cache := os.Getenv("QWA_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "qwen-appliance")
	}
	p := filepath.Join(cache, "ollama-v0.6.5", "bin", "ollama")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath("ollama"); err == nil {
		return p
	}
	return ""
}
