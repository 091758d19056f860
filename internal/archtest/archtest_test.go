package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

// TestModuleFollowsRules is the check itself: the module's real import
// graph breaks none of Rules.
func TestModuleFollowsRules(t *testing.T) {
	g, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	// A graph that lost its edges (go list printing nothing useful) would
	// pass every rule; make sure it is the real one.
	for _, edge := range [][2]string{{"verify", "provision/state"}, {"gateway", "gateway/tokens"}, {"cmd/qwen-appliance", "provision"}} {
		if !contains(g[edge[0]], edge[1]) {
			t.Fatalf("go list graph lacks %s → %s; got %d packages", edge[0], edge[1], len(g))
		}
	}
	for _, v := range Check(g, Rules) {
		t.Errorf("%s", v)
	}
	// A rule that matches nothing is stale (a package renamed), except for
	// packages other branches are adding.
	for _, r := range Rules {
		if r.Pkg == "kb/..." {
			continue
		}
		found := false
		for p := range g {
			found = found || Match(r.Pkg, p)
		}
		if !found {
			t.Errorf("rule for %s matches no package", r.Pkg)
		}
	}
}

// TestCheckRefusesForbiddenEdges feeds the project's rules fake graphs,
// each with one forbidden import, and expects exactly that one reported.
func TestCheckRefusesForbiddenEdges(t *testing.T) {
	base := func() Graph {
		return Graph{
			"manifests":          {},
			"internal/proc":      {},
			"internal/flock":     {},
			"harden":             {"manifests", "internal/proc"},
			"provision":          {"manifests", "harden", "provision/state", "gateway/tokens"},
			"provision/state":    {"manifests"},
			"gateway":            {"gateway/tokens", "gateway/audit", "manifests"},
			"gateway/tokens":     {"manifests", "internal/flock"},
			"gateway/audit":      {"manifests", "internal/flock"},
			"bundles":            {"manifests", "bundles/fetch"},
			"bundles/fetch":      {"manifests"},
			"verify":             {"provision/state", "harden", "gateway/audit", "internal/proc"},
			"backup":             {"provision", "provision/state", "gateway/tokens"},
			"kb":                 {"gateway/tokens", "gateway/audit", "manifests"},
			"cmd/qwen-appliance": {"provision", "verify", "gateway", "bundles", "backup", "kb"},
		}
	}
	if vs := Check(base(), Rules); len(vs) != 0 {
		t.Fatalf("the clean fake graph is refused: %v", vs)
	}
	for _, c := range []struct {
		name     string
		from, to string
		wantPkg  string
		wantDep  string
		wantPath string
	}{
		{"verify imports the installer", "verify", "provision", "verify", "provision", "verify → provision"},
		{"verify reaches the installer through a leaf", "provision/state", "provision", "verify", "provision", "verify → provision/state → provision"},
		{"gateway imports harden", "gateway", "harden", "gateway", "harden", "gateway → harden"},
		{"gateway sub-package imports bundles", "gateway/tokens", "bundles/fetch", "gateway/tokens", "bundles/fetch", "gateway/tokens → bundles/fetch"},
		{"manifests imports a product package", "manifests", "gateway/tokens", "manifests", "gateway/tokens", "manifests → gateway/tokens"},
		{"harden imports provision/state", "harden", "provision/state", "harden", "provision/state", "harden → provision/state"},
		{"bundles imports verify", "bundles", "verify", "bundles", "verify", "bundles → verify"},
		{"kb imports harden", "kb", "harden", "kb", "harden", "kb → harden"},
		{"a library imports the CLI", "backup", "cmd/qwen-appliance", "backup", "cmd/qwen-appliance", "backup → cmd/qwen-appliance"},
		{"internal imports a product package", "internal/proc", "manifests", "internal/proc", "manifests", "internal/proc → manifests"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := base()
			g[c.from] = append(g[c.from], c.to)
			vs := Check(g, Rules)
			if len(vs) == 0 {
				t.Fatalf("%s → %s not refused", c.from, c.to)
			}
			found := false
			for _, v := range vs {
				if v.Pkg == c.wantPkg && v.Dep == c.wantDep && strings.Join(v.Path, " → ") == c.wantPath {
					found = true
					if !strings.Contains(v.String(), c.wantPath) || v.Rule.Why == "" {
						t.Errorf("message %q lacks the path or the reason", v)
					}
				}
			}
			if !found {
				t.Errorf("want %s → %s (%s) among %v", c.wantPkg, c.wantDep, c.wantPath, vs)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, pkg string
		want         bool
	}{
		{"verify", "verify", true},
		{"verify", "verify/x", false},
		{"verify", "verifyx", false},
		{"gateway/...", "gateway", true},
		{"gateway/...", "gateway/tokens", true},
		{"gateway/...", "gatewayx", false},
		{"...", "anything/at/all", true},
	} {
		if got := Match(c.pattern, c.pkg); got != c.want {
			t.Errorf("Match(%q, %q) = %v", c.pattern, c.pkg, got)
		}
	}
}

func TestParse(t *testing.T) {
	in := `{"ImportPath": "` + Module + `/verify", "Imports": ["fmt", "` + Module + `/provision/state", "golang.org/x/sys/unix"]}
{"ImportPath": "` + Module + `/provision/state", "Imports": ["` + Module + `/manifests"]}`
	g, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != 2 || len(g["verify"]) != 1 || g["verify"][0] != "provision/state" || g["provision/state"][0] != "manifests" {
		t.Fatalf("graph %v", g)
	}
	bad := `{"ImportPath": "` + Module + `/x", "Error": {"Err": "no Go files"}}`
	if _, err := Parse(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "no Go files") {
		t.Fatalf("a package go list cannot load: err = %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestOnlyHardenTalksToNftables: the firewall is opened in one package, so
// provision and verify hold no netlink code of their own (and build on
// systems without it).
func TestOnlyHardenTalksToNftables(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, Module+"/...").Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		for _, imp := range f[1:] {
			if imp == "github.com/google/nftables" || strings.HasPrefix(imp, "github.com/google/nftables/") {
				if f[0] != Module+"/harden" {
					t.Errorf("%s imports %s: open the firewall through harden (Open, OpenNetNS)", f[0], imp)
				}
				seen = true
			}
		}
	}
	if !seen {
		t.Fatal("no package imports github.com/google/nftables: the listing is wrong")
	}
}
