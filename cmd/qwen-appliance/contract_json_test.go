package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	texttable "github.com/qwen-appliance/qwen-appliance/internal/table"
	"github.com/qwen-appliance/qwen-appliance/provision"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight"
	"github.com/qwen-appliance/qwen-appliance/provision/state"
)

// noJSON lists the leaf commands without --json, each with the reason: their
// output is not a report but a file for another program, or a log.
var noJSON = map[string]string{
	"serve":        "a long-running server: what it prints is a log",
	"storage unit": "prints a systemd unit file",
	"completion":   "prints a shell script",
	"man":          "prints a manual page",
}

// leafCommands returns the path ("bundle create") and definition of every
// visible command without subcommands.
func leafCommands(app *cli.App) map[string]*cli.Command {
	out := map[string]*cli.Command{}
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Hidden || c.Name == "help" {
				continue
			}
			p := strings.TrimSpace(path + " " + c.Name)
			if subs := subcommands(c); len(subs) > 0 {
				walk(p, subs)
			} else {
				out[p] = c
			}
		}
	}
	walk("", app.Commands)
	return out
}

func hasFlag(c *cli.Command, name string) bool {
	for _, f := range c.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// TestJSONContract checks that every command that reports something has
// --json, and that under --json even a usage error is one JSON object on
// stdout, {"error", "hint", "exitCode"}, with nothing on stderr.
func TestJSONContract(t *testing.T) {
	leaves := leafCommands(newApp(io.Discard, io.Discard))
	for path, c := range leaves {
		_, exempt := noJSON[path]
		switch {
		case !exempt && !hasFlag(c, "json"):
			t.Errorf("%s: no --json flag (add one, or list it in noJSON with the reason)", path)
		case exempt && hasFlag(c, "json"):
			t.Errorf("%s: has --json; remove it from noJSON", path)
		}
		var out, errb bytes.Buffer
		args := append(append([]string{"qwen-appliance"}, strings.Fields(path)...), "--json", "--qa-no-such-flag")
		code := run(t.Context(), args, &out, &errb)
		if code != exitUsage {
			t.Errorf("%s --json --qa-no-such-flag: exit %d, want %d", path, code, exitUsage)
		}
		checkJSONError(t, path, out.Bytes(), exitUsage)
		if errb.Len() != 0 {
			t.Errorf("%s --json: stderr %q, want nothing", path, errb.String())
		}
	}
	for path := range noJSON {
		if leaves[path] == nil {
			t.Errorf("noJSON lists %q, which is not a command", path)
		}
	}
	// Unknown commands and missing flags, under --json, too.
	for _, args := range [][]string{{"instal", "--json"}, {"tls", "init", "--json"}, {"bundle", "craete", "--json"}} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), append([]string{"qwen-appliance"}, args...), &out, &errb); code != exitUsage {
			t.Errorf("%v: exit %d", args, code)
		}
		checkJSONError(t, strings.Join(args, " "), out.Bytes(), exitUsage)
	}
	// --json=false asks for text.
	var out, errb bytes.Buffer
	run(t.Context(), []string{"qwen-appliance", "instal", "--json=false"}, &out, &errb)
	if out.Len() != 0 || !strings.Contains(errb.String(), "error: unknown command") {
		t.Errorf("--json=false: stdout %q stderr %q", out.String(), errb.String())
	}
}

// checkJSONError fails unless data is exactly one jsonError object with a
// message and the exit code.
func checkJSONError(t *testing.T, what string, data []byte, code int) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e jsonError
	if err := dec.Decode(&e); err != nil {
		t.Errorf("%s: stdout is not a JSON error object: %v: %q", what, err, data)
		return
	}
	if dec.More() {
		t.Errorf("%s: more than one JSON value on stdout: %q", what, data)
	}
	if e.Error == "" || e.ExitCode != code {
		t.Errorf("%s: JSON error %+v, want a message and exitCode %d", what, e, code)
	}
	var raw map[string]any
	_ = json.Unmarshal(data, &raw)
	for _, k := range []string{"error", "hint", "exitCode"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("%s: JSON error lacks %q: %s", what, k, data)
		}
	}
}

// TestWorkflowOrder checks that the top-level help lists every command, in
// the order an operator meets them.
func TestWorkflowOrder(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	var names []string
	for _, c := range app.Commands {
		if !c.Hidden && c.Name != "help" {
			names = append(names, c.Name)
			if !slices.Contains(workflowOrder, c.Name) {
				t.Errorf("command %q is not in workflowOrder", c.Name)
			}
		}
	}
	var out bytes.Buffer
	if code := run(t.Context(), []string{"qwen-appliance", "--help"}, &out, io.Discard); code != exitOK {
		t.Fatalf("--help: exit %d", code)
	}
	pos := -1
	for _, n := range workflowOrder {
		i := strings.Index(out.String(), "\n   "+n+" ")
		if i < 0 {
			t.Errorf("--help does not list %q", n)
			continue
		}
		if i < pos {
			t.Errorf("--help lists %q out of workflow order", n)
		}
		pos = i
	}
	if i, j := slices.Index(names, "bundle"), slices.Index(names, "verify"); i > j || slices.Index(names, "install") < i {
		t.Errorf("commands not in workflow order: %v", names)
	}
}

// TestManPage checks that the manual page has a section for every command
// and that groff formats it without a warning.
func TestManPage(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	// install renders the page while it runs, and urfave/cli has then given
	// the running command a "help" subcommand: it is still a command.
	for _, c := range app.Commands {
		if c.Name == "install" {
			c.Subcommands = append(c.Subcommands, &cli.Command{Name: "help"})
		}
	}
	page := manPage(app)
	for path := range leafCommands(app) {
		if !strings.Contains(page, `.SS "`+roffText("qwen-appliance "+path)+`"`) {
			t.Errorf("manual page has no section for %s", path)
		}
	}
	if !strings.HasPrefix(page, ".TH QWEN-APPLIANCE 1 ") || !strings.Contains(page, ".SH \"EXIT STATUS\"") {
		t.Errorf("manual page lacks its title or EXIT STATUS:\n%.300s", page)
	}
	for i, l := range strings.Split(page, "\n") {
		if strings.ContainsFunc(l, func(r rune) bool { return r > 0x7e }) {
			t.Errorf("line %d has a non-ASCII character: %q", i+1, l)
		}
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not installed: checked the page's structure only")
	}
	for _, dev := range []string{"-Tutf8", "-Tascii"} {
		cmd := exec.Command(groff, "-man", "-ww", "-z", dev)
		cmd.Stdin = strings.NewReader(page)
		out, err := cmd.CombinedOutput()
		var warnings []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// A terminal in the C locale (-Tascii) cannot show the help's
			// Chinese examples; anything else is a warning.
			if m := cjkGlyph.FindStringSubmatch(l); l == "" || dev == "-Tascii" && m != nil && wideCode(m[1]) {
				continue
			}
			warnings = append(warnings, l)
		}
		if err != nil || len(warnings) > 0 {
			t.Errorf("groff -ww %s: %v\n%s", dev, err, strings.Join(warnings, "\n"))
		}
	}
}

func TestRoffText(t *testing.T) {
	for in, want := range map[string]string{
		`.TH x`:      `\&.TH x`,
		`'quote`:     `\&'quote`,
		`a\b`:        `a\eb`,
		`--json`:     `\-\-json`,
		"kv → 模型":    `kv \(-> \[u6A21]\[u578B]`,
		"a…b":        "a...b",
		"(a.b, 'c')": `(a.b, 'c')`,
	} {
		if got := roffText(in); got != want {
			t.Errorf("roffText(%q) = %q, want %q", in, got, want)
		}
	}
}

// runOK runs qwen-appliance ARGS in this process and returns its stdout,
// failing the test on any exit status but 0.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(t.Context(), append([]string{"qwen-appliance"}, args...), &out, &errb); code != exitOK {
		t.Fatalf("%v: exit %d: %s", args, code, errb.String())
	}
	return out.String()
}

// TestTablesFit runs the commands that print tables, with long and CJK
// cells, and checks every line fits 100 terminal columns, and that their
// --json keys are camelCase.
func TestTablesFit(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	must := func(args ...string) string { t.Helper(); return runOK(t, args...) }
	// may runs a command whose exit status depends on the host (preflight).
	may := func(args ...string) string {
		var out bytes.Buffer
		run(t.Context(), append([]string{"qwen-appliance"}, args...), &out, io.Discard)
		return out.String()
	}
	must("keys", "generate", "--out", p("k"))
	if err := os.MkdirAll(p("bundle/model"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("bundle/model/model-00001-of-00004.safetensors"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p("meta.json"), []byte(preflightMeta), 0o644); err != nil {
		t.Fatal(err)
	}
	must("manifest", "create", p("bundle"), "--key", p("k.key"), "--name", "qwen2.5-7b-instruct", "--version", "3", "--meta", p("meta.json"))
	longStore := p(strings.Repeat("a-very-long-store-directory/", 4))
	toks := p("tokens.json")
	must("tokens", "create", "--file", toks, "--name", "知识库检索机器人-人力资源部-薪酬与福利问答", "--roles", "hr,finance,legal,engineering", "--clearance", "secret",
		"--models", "qwen2.5-7b-instruct,qwen2.5-7b-instruct-gguf,another-model-with-a-long-name", "--expires", "90d", "--rpm", "600", "--tpm", "1000000")
	must("tokens", "create", "--file", toks, "--name", "staff")
	docs := p("docs")
	if err := os.MkdirAll(docs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(docs, "leave.md"), []byte("# 员工年假与病假制度说明（二〇二六年修订版，适用于全体正式员工与合同制员工）\n\n年假每年十五天。\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	must("kb", "ingest", "--db", p("kb/kb.db"), "--audit-log", p("audit.log"), docs, "--allow", "role:hr,role:finance,role:legal,role:engineering", "--class", "internal",
		"--collection", "human-resources-policies-and-procedures")

	// An installation under a long root (as in the sandbox scripts), under
	// systemd: long store and log paths, the longest unit names.
	installed := p(strings.Repeat("a-very-long-install-root/", 3))
	longLog := filepath.Join(installed, "var/log/qwen-appliance")
	if err := state.Save(installed, &state.State{
		Bundle:  state.Bundle{Name: "qwen2.5-7b-instruct-gguf-q4-k-m", Version: 12},
		Store:   state.Store{Dir: filepath.Join(longStore, "models"), Backend: "fscrypt"},
		Runtime: state.Service{Name: "runtime", Unit: "/etc/systemd/system/qwen-appliance-runtime-qwen2.5-7b-instruct-gguf-q4-k-m-v12.service", Listen: []string{"127.0.0.1:11434"}, Log: filepath.Join(longLog, "runtime.log")},
		Gateway: state.Gateway{Service: state.Service{Name: "gateway", Unit: "/etc/systemd/system/qwen-appliance-gateway.service",
			Listen: []string{"[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:8443", "127.0.0.1:9464"}, Log: filepath.Join(longLog, "gateway.log")},
			URL: "https://[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:8443"},
		Previous: &state.Bundle{Name: "qwen2.5-7b-instruct-gguf-q4-k-m", Version: 11},
	}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		out  string
	}{
		{"status (installed)", may("status", "--root", installed)},
		{"preflight", may("preflight", "--bundle", p("bundle"), "--trust", p("k.pub"), "--store", longStore)},
		{"tokens list", must("tokens", "list", "--file", toks)},
		{"kb list", must("kb", "list", "--db", p("kb/kb.db"))},
		{"bundle specs", must("bundle", "specs")},
		{"verify --list", must("verify", "--list")},
		{"status", must("status", "--root", dir)},
		// bundle specs is left out: README.md shows its list, whose demo
		// line is 101 columns; it moves to writeTable with README's block.
		{"--help", must("--help")},
	} {
		checkWidth(t, tc.name, tc.out)
	}
	// Every command group's list of commands, too.
	for _, c := range newApp(io.Discard, io.Discard).Commands {
		if len(c.Subcommands) > 0 {
			checkWidth(t, c.Name+" --help", must(c.Name, "--help"))
		}
	}
	// --wide keeps what the default cuts.
	if wide := may("preflight", "--bundle", p("bundle"), "--trust", p("k.pub"), "--store", longStore, "--wide"); !strings.Contains(wide, "REQUIRED") || strings.Contains(wide, "…") {
		t.Errorf("preflight --wide is not the full table:\n%s", wide)
	}
	if wide := must("tokens", "list", "--file", toks, "--wide"); !strings.Contains(wide, "another-model-with-a-long-name") {
		t.Errorf("tokens list --wide cut a cell:\n%s", wide)
	}

	for _, tc := range []struct {
		name string
		out  string
	}{
		{"preflight --json", may("preflight", "--bundle", p("bundle"), "--trust", p("k.pub"), "--store", longStore, "--json")},
		{"tokens list --json", must("tokens", "list", "--file", toks, "--json")},
		{"kb list --json", must("kb", "list", "--db", p("kb/kb.db"), "--json")},
		{"verify --list --json", must("verify", "--list", "--json")},
		{"status --json", must("status", "--root", dir, "--json")},
		{"bundle specs --json", must("bundle", "specs", "--json")},
	} {
		var v any
		if err := json.Unmarshal([]byte(tc.out), &v); err != nil {
			t.Errorf("%s: not JSON: %v", tc.name, err)
			continue
		}
		for _, k := range pascalKeys(v) {
			t.Errorf("%s: key %q is not camelCase", tc.name, k)
		}
	}
}

// pascalKeys returns the object keys in v that look like Go field names
// (an upper-case letter, then a lower-case one): fields without a json tag.
func pascalKeys(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if pascal.MatchString(k) {
				out = append(out, k)
			}
			out = append(out, pascalKeys(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, pascalKeys(x)...)
		}
	}
	return out
}

var pascal = regexp.MustCompile(`^[A-Z][a-z]`)

func TestPascalKeys(t *testing.T) {
	var v any
	_ = json.Unmarshal([]byte(`{"ok": 1, "list": [{"State": {"bundleName": 1, "/etc/x": 2, "GPU0": 3}}]}`), &v)
	if got := pascalKeys(v); len(got) != 1 || got[0] != "State" {
		t.Errorf("pascalKeys = %v, want [State]", got)
	}
}

// preflightMeta is preflight_gpu.txtar's model: a GPU bundle this host
// cannot run, so the report has failures, findings and fixes.
const preflightMeta = `{"model": {"name": "Qwen/Qwen2.5-7B-Instruct", "architecture": "qwen2", "format": "safetensors", "layers": 28,
 "attentionHeads": 28, "kvHeads": 4, "headDim": 128, "hiddenSize": 3584, "dtype": "bf16",
 "maxContext": 32768, "weightsBytes": 15231233024},
 "requirements": {"accelerator": "nvidia", "minComputeCapability": "8.0", "minDriverVersion": "535.104.05"},
 "runtime": {"kind": "vllm", "devices": ["cuda"], "modelPath": "model"},
 "provenance": {"source": "hf://Qwen/Qwen2.5-7B-Instruct"}}`

// checkWidth fails for output that is empty or has a line wider than 100
// terminal columns.
func checkWidth(t *testing.T, name, out string) {
	t.Helper()
	if out == "" {
		t.Errorf("%s printed nothing", name)
	}
	for _, l := range strings.Split(out, "\n") {
		if w := texttable.StringWidth(l); w > texttable.Width {
			t.Errorf("%s: a line of %d columns:\n%s", name, w, l)
		}
	}
}

// TestInstallJSONKeys: install --json prints provision.Result, whose keys
// were Go field names (State, AdminToken) before they had json tags.
func TestInstallJSONKeys(t *testing.T) {
	data, err := json.Marshal(provision.Result{State: &state.State{}, Preflight: &preflight.Report{}, AdminToken: "x", RecoveryKey: "y", Plan: []string{"p"}})
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	if bad := pascalKeys(v); len(bad) > 0 {
		t.Errorf("install --json keys not camelCase: %v\n%s", bad, data)
	}
}

var cjkGlyph = regexp.MustCompile(`can't find special character 'u([0-9A-F]{4,6})'`)

// wideCode reports whether hex names an East Asian wide character.
func wideCode(hex string) bool {
	n, err := strconv.ParseUint(hex, 16, 32)
	return err == nil && texttable.RuneWidth(rune(n)) == 2
}
