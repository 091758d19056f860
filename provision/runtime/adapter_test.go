package runtime

import (
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/bundles/demomodel"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// configs are one realistic configuration per runtime kind.
func configs() map[string]Config {
	demo := demomodel.Meta()
	return map[string]Config{
		KindOllama: {
			Bundle: "/srv/qwen-appliance/bundle", Store: "/var/lib/qwen-appliance/store",
			Runtime: demo.Runtime, Model: demo.Model, Port: 11500,
		},
		KindLlamaCpp: {
			Bundle: "/srv/qwen-appliance/bundle", Store: "/var/lib/qwen-appliance/store",
			Runtime: manifests.Runtime{Kind: KindLlamaCpp, Version: "b6500", Devices: []string{"cuda", "cpu"},
				ModelPath: "model/qwen2.5-7b-instruct-q4_k_m.gguf", ServedModelName: "qwen2.5-7b-instruct", DefaultContext: 8192},
			Model:     manifests.Model{Dtype: "q4_k_m", KVCacheDtype: "f16"},
			GPULayers: -1,
		},
		KindVLLM: {
			Bundle: "/srv/qwen-appliance/bundle", Store: "/var/lib/qwen-appliance/store",
			Runtime: manifests.Runtime{Kind: KindVLLM, Version: "0.11.0", Devices: []string{"cuda"},
				ModelPath: "model/Qwen2.5-7B-Instruct", ServedModelName: "qwen2.5-7b-instruct",
				DefaultContext: 32768, GPUMemoryUtilization: 0.9},
			Model:          manifests.Model{Dtype: "bf16", KVCacheDtype: "bf16"},
			Context:        16384,
			TensorParallel: 2,
			GPUs:           []string{"GPU-0a1b2c3d-0000-4000-8000-000000000000", "GPU-0a1b2c3d-0000-4000-8000-000000000001"},
		},
	}
}

type golden struct {
	Install   []Command `json:"install"`
	Command   Command   `json:"command"`
	Endpoints Endpoints `json:"endpoints"`
}

func TestAdaptersGolden(t *testing.T) {
	for kind, c := range configs() {
		t.Run(kind, func(t *testing.T) {
			a, err := For(kind)
			if err != nil {
				t.Fatal(err)
			}
			var g golden
			if g.Install, err = a.Install(c); err != nil {
				t.Fatal(err)
			}
			if g.Command, err = a.Command(c); err != nil {
				t.Fatal(err)
			}
			g.Endpoints = a.Endpoints()
			got, _ := json.MarshalIndent(g, "", "  ")
			got = append(got, '\n')
			path := filepath.Join("testdata", strings.ReplaceAll(kind, ".", "")+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from the generated configuration (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}

// TestTelemetryAlwaysOff checks every adapter's environment, for the server
// and for its install steps: the opt-outs are set, and nothing of the
// caller's environment leaks in.
func TestTelemetryAlwaysOff(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://proxy.example:3128")
	t.Setenv("HF_TOKEN", "hf_secret")
	t.Setenv("OLLAMA_HOST", "0.0.0.0:11434")
	required := []string{"DO_NOT_TRACK=1", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"}
	for kind, c := range configs() {
		a, _ := For(kind)
		cmd, err := a.Command(c)
		if err != nil {
			t.Fatal(err)
		}
		steps, _ := a.Install(c)
		for _, cm := range append(steps, cmd) {
			for _, want := range required {
				if !slices.Contains(cm.Env, want) {
					t.Errorf("%s %s: %s missing from %v", kind, cm.Path, want, cm.Env)
				}
			}
			for _, kv := range cm.Env {
				if strings.Contains(kv, "proxy") || strings.Contains(kv, "hf_secret") || kv == "OLLAMA_HOST=0.0.0.0:11434" {
					t.Errorf("%s: caller's environment leaked: %s", kind, kv)
				}
			}
		}
		if kind == KindVLLM && !slices.Contains(cmd.Env, "VLLM_NO_USAGE_STATS=1") {
			t.Errorf("vllm: VLLM_NO_USAGE_STATS=1 missing")
		}
		if kind == KindLlamaCpp {
			for _, f := range []string{"--no-slots", "--metrics"} {
				if !slices.Contains(cmd.Args, f) {
					t.Errorf("llama.cpp: %s missing from %v", f, cmd.Args)
				}
			}
		}
	}
}

// TestLoopbackOnly: whatever host is asked for, no adapter produces a
// command that listens beyond loopback.
func TestLoopbackOnly(t *testing.T) {
	refused := []string{"0.0.0.0", "::", "[::]", "10.0.0.5", "192.168.1.10", "fe80::1%eth0", "::ffff:10.0.0.5",
		"localhost", "example.com", "127.0.0.1:80", " 127.0.0.1", "127.1"}
	allowed := map[string]string{"": "127.0.0.1", "127.0.0.1": "127.0.0.1", "127.0.0.2": "127.0.0.2", "::1": "::1"}
	for kind, c := range configs() {
		a, _ := For(kind)
		for _, h := range refused {
			c.Host = h
			if _, err := a.Command(c); !errors.Is(err, ErrNotLoopback) {
				t.Errorf("%s host %q: err = %v, want ErrNotLoopback", kind, h, err)
			}
		}
		for h, want := range allowed {
			c.Host = h
			cmd, err := a.Command(c)
			if err != nil {
				t.Errorf("%s host %q: %v", kind, h, err)
				continue
			}
			if got := listenHost(kind, cmd); got != want {
				t.Errorf("%s host %q: listens on %q, want %q", kind, h, got, want)
			}
		}
	}
}

// listenHost extracts the address a launch command binds, the way each
// server reads it.
func listenHost(kind string, cmd Command) string {
	if kind == KindOllama {
		for _, kv := range cmd.Env {
			if v, ok := strings.CutPrefix(kv, "OLLAMA_HOST="); ok {
				host := v[:strings.LastIndexByte(v, ':')]
				return strings.Trim(host, "[]")
			}
		}
		return "(none)"
	}
	if i := slices.Index(cmd.Args, "--host"); i >= 0 && i+1 < len(cmd.Args) {
		return cmd.Args[i+1]
	}
	return "(none)"
}

func TestConfigRefusesEscapes(t *testing.T) {
	c := configs()[KindOllama]
	c.Runtime.Entrypoint = "../../usr/bin/ollama"
	if _, err := (ollama{}).Command(c); err == nil {
		t.Error("an entrypoint outside the bundle was accepted")
	}
	c = configs()[KindLlamaCpp]
	c.Runtime.ModelPath = "/etc/shadow"
	if _, err := (llamaCpp{}).Command(c); err == nil {
		t.Error("an absolute model path was accepted")
	}
	c.Runtime.ModelPath = ""
	if _, err := (llamaCpp{}).Command(c); err == nil {
		t.Error("an empty model path was accepted")
	}
	if _, err := For("tgi"); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("For(tgi) = %v", err)
	}
	c = configs()[KindVLLM]
	c.GPUMemoryUtilization = 1.5
	if _, err := (vllm{}).Command(c); err == nil {
		t.Error("gpu memory utilization 1.5 accepted")
	}
}

// TestVersionedFlags: flags that older releases lack are left out, and the
// request log is turned off where it defaults to on.
func TestVersionedFlags(t *testing.T) {
	v := configs()[KindVLLM]
	for version, want := range map[string]bool{"0.6.3.post1": true, "0.10.1.1": true, "0.10.2": false, "0.11.0": false, "": false} {
		v.Runtime.Version = version
		cmd, err := (vllm{}).Command(v)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(cmd.Args, "--disable-log-requests"); got != want {
			t.Errorf("vllm %q: --disable-log-requests %v, want %v", version, got, want)
		}
	}
	l := configs()[KindLlamaCpp]
	for version, want := range map[string]bool{"b4698": false, "b5500": true, "b6500": true, "": true} {
		l.Runtime.Version = version
		cmd, err := (llamaCpp{}).Command(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Contains(cmd.Args, "--offline"); got != want {
			t.Errorf("llama.cpp %q: --offline %v, want %v", version, got, want)
		}
		if !slices.Contains(cmd.Args, "--no-slots") {
			t.Errorf("llama.cpp %q: --no-slots missing", version)
		}
	}
}

// TestCheckGPUs: the GPU list run takes from install is UUIDs, each once,
// at least as many as the tensor-parallel degree.
func TestCheckGPUs(t *testing.T) {
	a, b := "GPU-0a1b2c3d-0000-4000-8000-000000000000", "MIG-0a1b2c3d-0000-4000-8000-000000000001"
	for _, ok := range []struct {
		uuids []string
		tp    int
	}{{nil, 0}, {nil, 8}, {[]string{a}, 0}, {[]string{a, b}, 2}, {[]string{a, b}, 1}} {
		if err := CheckGPUs(ok.uuids, ok.tp); err != nil {
			t.Errorf("CheckGPUs(%v, %d) = %v", ok.uuids, ok.tp, err)
		}
	}
	for _, bad := range []struct {
		uuids []string
		tp    int
		want  string
	}{
		{[]string{"0"}, 0, "not a UUID"},
		{[]string{a + ",x"}, 0, "not a UUID"},
		{[]string{a, a}, 0, "named twice"},
		{[]string{a}, 2, "needs 2 GPUs"},
	} {
		if err := CheckGPUs(bad.uuids, bad.tp); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("CheckGPUs(%v, %d) = %v, want %q", bad.uuids, bad.tp, err, bad.want)
		}
	}
}
