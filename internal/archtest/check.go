package archtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
)

// Module is the module path the rules' patterns are relative to.
const Module = "github.com/qwen-appliance/qwen-appliance"

// Graph maps each project package (path relative to Module) to the project
// packages it imports directly; imports from outside the module are left out.
type Graph map[string][]string

// Rule constrains what the packages matching Pkg (minus Except) may import.
// A pattern is a path relative to the module: "verify" is that package
// alone, "gateway/..." is gateway and every package below it, "..." is all.
type Rule struct {
	Pkg    string
	Except []string
	// Only, when set, lists everything the package may import directly
	// from the module.
	Only []string
	// Never lists what the package must not depend on, directly or through
	// any other project package.
	Never []string
	Why   string
}

// Violation is one forbidden edge or dependency.
type Violation struct {
	Pkg  string   // the importing package
	Dep  string   // the forbidden package
	Path []string // Pkg … Dep, the chain of imports that reaches Dep
	Rule Rule
}

func (v Violation) String() string {
	return fmt.Sprintf("%s must not import %s (%s): %s", v.Pkg, v.Dep, strings.Join(v.Path, " → "), v.Rule.Why)
}

// Match reports whether the package path p matches pattern.
func Match(pattern, p string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return p == pattern
}

func matchAny(patterns []string, p string) bool {
	for _, pat := range patterns {
		if Match(pat, p) {
			return true
		}
	}
	return false
}

// Check returns every violation of rules in g, sorted by package.
func Check(g Graph, rules []Rule) []Violation {
	pkgs := make([]string, 0, len(g))
	for p := range g {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	var out []Violation
	for _, r := range rules {
		for _, p := range pkgs {
			if !Match(r.Pkg, p) || matchAny(r.Except, p) {
				continue
			}
			if r.Only != nil {
				for _, d := range g[p] {
					if !matchAny(r.Only, d) {
						out = append(out, Violation{Pkg: p, Dep: d, Path: []string{p, d}, Rule: r})
					}
				}
			}
			if len(r.Never) > 0 {
				for _, path := range deps(g, p) {
					if d := path[len(path)-1]; matchAny(r.Never, d) {
						out = append(out, Violation{Pkg: p, Dep: d, Path: path, Rule: r})
					}
				}
			}
		}
	}
	return out
}

// deps returns, for every project package p depends on, the shortest chain
// of imports from p to it, in a stable order.
func deps(g Graph, p string) [][]string {
	parent := map[string]string{p: ""}
	queue := []string{p}
	var reached []string
	for len(queue) > 0 {
		q := queue[0]
		queue = queue[1:]
		imps := append([]string(nil), g[q]...)
		sort.Strings(imps)
		for _, d := range imps {
			if _, seen := parent[d]; seen {
				continue
			}
			parent[d] = q
			queue = append(queue, d)
			reached = append(reached, d)
		}
	}
	out := make([][]string, 0, len(reached))
	for _, d := range reached {
		var path []string
		for n := d; n != ""; n = parent[n] {
			path = append([]string{n}, path...)
		}
		out = append(out, path)
	}
	return out
}

// listed is what Load reads of each package `go list -json` prints.
type listed struct {
	ImportPath string
	Imports    []string
	Error      *struct{ Err string }
}

// Load runs `go list -e -json` on the whole module and returns its import
// graph (production imports; test files may cross the rules). A package go
// list cannot load is an error.
func Load() (Graph, error) {
	cmd := exec.Command("go", "list", "-e", "-json", Module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list: %w: %s", err, stderr.Bytes())
	}
	return Parse(bytes.NewReader(out))
}

// Parse reads the JSON stream `go list -json` prints.
func Parse(r io.Reader) (Graph, error) {
	g := Graph{}
	dec := json.NewDecoder(r)
	for {
		var p listed
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("go list output: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		rel, ok := relative(p.ImportPath)
		if !ok {
			continue
		}
		imps := []string{}
		for _, imp := range p.Imports {
			if r, ok := relative(imp); ok {
				imps = append(imps, r)
			}
		}
		g[rel] = imps
	}
	return g, nil
}

func relative(importPath string) (string, bool) {
	if importPath == Module {
		return ".", true
	}
	return strings.CutPrefix(importPath, Module+"/")
}
