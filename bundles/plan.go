package bundles

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/qwen-appliance/qwen-appliance/bundles/fetch"
	"github.com/qwen-appliance/qwen-appliance/bundles/specs"
	"github.com/qwen-appliance/qwen-appliance/manifests"
)

// plan resolves the spec's sources into the list of files to fetch.
func plan(ctx context.Context, spec *specs.Spec, opts CreateOptions, hub *fetch.Hub, meta *manifests.Meta, res *Result) ([]*item, string, error) {
	var items, runtimeItems []*item
	revision := ""
	// What the command line and the spec must supply is checked before any
	// hub is asked or anything is fetched: runtime artefacts first.
	known := map[string]bool{}
	for _, a := range spec.Runtime.Artifacts {
		known[a.Name] = true
	}
	for name := range opts.Artifacts {
		if !known[name] {
			var names []string
			for n := range known {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, "", inputError{fmt.Errorf("--artifact %s: the spec has no such runtime artefact (it has: %s)", name, strings.Join(names, ", "))}
		}
	}
	for i, a := range spec.Runtime.Artifacts {
		field := fmt.Sprintf("runtime.artifacts[%d]", i)
		url, sum := a.URL, a.SHA256
		if o, ok := opts.Artifacts[a.Name]; ok {
			url, sum = o, ""
			if u, s, ok := strings.Cut(o, "#sha256="); ok {
				url, sum = u, s
				if !hexRE.MatchString(sum) {
					return nil, "", inputError{fmt.Errorf("--artifact %s: sha256 %q is not 64 lower-case hex digits", a.Name, sum)}
				}
			}
		}
		if url == "" {
			if a.Optional {
				res.Skipped = append(res.Skipped, a.Name)
				opts.Progress.Note("runtime artefact %s not supplied (optional); pass --artifact %s=URL to include it", a.Name, a.Name)
				continue
			}
			return nil, "", inputError{spec.Errorf(field+".url", "%s has no URL; pass --artifact %s=URL#sha256=HEX", a.Name, a.Name)}
		}
		it, err := fileItem(spec, field, url, sum, a.Dest, opts.AllowUnpinned)
		if err != nil {
			return nil, "", inputError{err}
		}
		it.role, it.license, it.mode = "runtime", a.License, a.Mode
		if it.mode == "" {
			it.mode = "0644"
		}
		if it.unpinned {
			res.Unpinned = append(res.Unpinned, it.dest)
		}
		runtimeItems = append(runtimeItems, it)
	}
	// Then the model facts preflight needs: those the spec (and a
	// generator) leave out must be readable from a config.json or a GGUF
	// header among the sources, or the bundle is refused now.
	pre := *meta
	for _, src := range spec.Model.Sources {
		if specs.SourceKind(src.URL) == specs.KindGenerated {
			if g, err := lookupGenerator(src.URL); err == nil {
				pre.Model = overlay(g.Meta().Model, pre.Model)
			}
		}
	}
	if miss := missingFacts(pre.Model, false); len(miss) > 0 && !mayProvideFacts(spec) {
		return nil, "", inputError{&MissingFactsError{Spec: spec.Name, Fields: miss}}
	}
	for i, src := range spec.Model.Sources {
		field := fmt.Sprintf("model.sources[%d]", i)
		kind := specs.SourceKind(src.URL)
		switch {
		case kind == specs.KindHF:
			repo, rev, _ := specs.ParseHF(src.URL)
			if !commitRE.MatchString(rev) && !opts.AllowUnpinned {
				return nil, "", spec.Errorf(field+".url", "revision %q is not a 40-hex commit; pin one (or pass --allow-unpinned)", rev)
			}
			r, err := hub.Resolve(ctx, repo, rev)
			if err != nil {
				return nil, "", err
			}
			if commitRE.MatchString(rev) && r.Commit != rev {
				return nil, "", fmt.Errorf("%w: %s: the hub resolved %s to commit %s", manifests.ErrVerification, src.URL, rev, r.Commit)
			}
			if revision == "" {
				revision = r.Commit
			}
			dir := strings.TrimSuffix(src.Dest, "/")
			if dir == "" {
				dir = "model"
			}
			matched := map[string]bool{}
			for _, f := range r.Files {
				if !included(f.Path, src.Include) {
					continue
				}
				pin := src.Files[f.Path]
				if pin != "" && f.SHA256 != "" && pin != f.SHA256 {
					return nil, "", fmt.Errorf("%w: %s: the hub advertises sha256 %s, the spec pins %s", manifests.ErrVerification, f.Path, f.SHA256, pin)
				}
				matched[f.Path] = true
				dest := dir + "/" + f.Path
				w := hub.Want(r, f, dest, pin)
				items = append(items, &item{dest: dest, want: w, kind: specs.KindHF, role: "model", source: src.URL,
					revision: r.Commit, license: spec.Model.License, mode: "0644"})
			}
			for p := range src.Files {
				if !matched[p] {
					return nil, "", spec.Errorf(field+".files."+p, "the hub lists no such file at %s (or include leaves it out)", r.Commit)
				}
			}
			if len(matched) == 0 {
				return nil, "", spec.Errorf(field+".include", "no file of %s@%s matches", repo, r.Commit)
			}
		case kind == specs.KindGenerated:
			g, err := lookupGenerator(src.URL)
			if err != nil {
				return nil, "", spec.Errorf(field+".url", "%v", err)
			}
			gm := g.Meta()
			meta.Model = overlay(gm.Model, meta.Model)
			meta.Runtime = overlay(gm.Runtime, meta.Runtime)
			meta.Requirements = overlay(gm.Requirements, meta.Requirements)
			items = append(items, &item{dest: src.Dest, want: fetch.Want{Name: src.Dest, URL: src.URL, Size: -1, SHA256: src.SHA256},
				kind: specs.KindGenerated, gen: &g, role: "model", source: src.URL, license: spec.Model.License, mode: "0644"})
		case kind == specs.KindGetter && fetch.IsGitSource(src.URL):
			// A git repository, pinned by its commit: every file of the
			// checkout lands under dest.
			if src.SHA256 != "" {
				return nil, "", spec.Errorf(field+".sha256", "a git source is pinned by ?ref=<40-hex commit>, not sha256")
			}
			if !fetch.GitPinned(src.URL) {
				if !opts.AllowUnpinned {
					return nil, "", spec.Errorf(field+".url", "%s is not pinned by ?ref=<40-hex commit> (or pass --allow-unpinned)", src.URL)
				}
				res.Unpinned = append(res.Unpinned, src.Dest)
			}
			items = append(items, &item{dest: strings.TrimSuffix(src.Dest, "/"), want: fetch.Want{Name: src.Dest, URL: src.URL, Size: -1},
				kind: kindGit, role: "model", source: src.URL, revision: fetch.GitRef(src.URL), license: spec.Model.License, mode: "0644",
				unpinned: !fetch.GitPinned(src.URL)})
		default: // one file: http(s), file://, or another go-getter scheme
			it, err := fileItem(spec, field, src.URL, src.SHA256, src.Dest, opts.AllowUnpinned)
			if err != nil {
				return nil, "", err
			}
			it.role, it.license, it.mode = "model", spec.Model.License, "0644"
			if it.unpinned {
				res.Unpinned = append(res.Unpinned, it.dest)
			}
			items = append(items, it)
		}
	}
	items = append(items, runtimeItems...)
	return items, revision, nil
}

// fileItem plans a single-file source (http, file or go-getter).
func fileItem(spec *specs.Spec, field, url, sum, dest string, allowUnpinned bool) (*item, error) {
	it := &item{dest: dest, source: url, kind: specs.SourceKind(url),
		want: fetch.Want{Name: dest, URL: url, Size: -1, SHA256: sum}}
	if it.kind == specs.KindGetter && fetch.IsGitSource(url) {
		return nil, spec.Errorf(field+".url", "git repositories are model sources only, not runtime artefacts")
	}
	if sum == "" {
		if !allowUnpinned {
			return nil, spec.Errorf(field+".sha256", "%s has no sha256 pin; add one (or pass --artifact NAME=URL#sha256=HEX, or --allow-unpinned)", url)
		}
		it.unpinned = true
	}
	return it, nil
}

// included reports whether p matches one of the globs (all files when none).
func included(p string, globs []string) bool {
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, p); ok {
			return true
		}
	}
	return false
}
