package main

// The documentation is tested so that it cannot drift from the program:
//
//   - Every ```console block in README.md, CONTRIBUTING.md and docs/*.md is
//     a session: lines starting with "$ " are commands (a line ending in "\"
//     continues on the next), the lines after a command are its output,
//     stdout and stderr together as a terminal shows them. TestDocSessions
//     runs each block's commands in order in one shell, in a fresh temporary
//     directory with this test binary on PATH as qwen-appliance, and compares
//     the transcript with the block. In expected output "…" matches any text
//     within a line, and a line holding only "…" matches any number of lines
//     (hashes, times, temporary paths, rows left out); a tab counts as four
//     spaces and trailing blanks are ignored. A block that needs
//     more than an unprivileged user has a marker comment on the line before
//     its fence, "<!-- console: root -->" (conditions: root, ollama); the
//     block is skipped with the reason when a condition does not hold.
//   - A fenced block preceded by "<!-- file: NAME -->" is a file the reader
//     is asked to write: every later console block of the same document
//     starts with it in its directory, so a session can use a configuration
//     the page shows whole.
//   - A fenced block preceded by "<!-- excerpt: PATH -->" quotes PATH
//     (relative to the repository root), a golden file a test keeps true:
//     its lines must occur in PATH in that order, with runs of white space
//     compared as one space and "…" as above.
//   - Every relative link in those files and SECURITY.md must name a file
//     that exists, and an anchor must name a heading of that file
//     (TestDocLinks).
//   - README.md stays short (TestReadmeSize).

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/provision/runtime"
)

// repoRoot is the repository root, seen from this package's directory.
const repoRoot = "../.."

// readmeLimit is the hard limit on README.md; the target is about 10 KB.
const readmeLimit = 14 * 1024

// docFiles are the Markdown files whose console blocks and links are checked.
func docFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md", "CONTRIBUTING.md", "SECURITY.md"}
	more, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range more {
		rel, err := filepath.Rel(repoRoot, m)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, rel)
	}
	return files
}

// docBlock is one fenced block of a Markdown file.
type docBlock struct {
	file   string
	line   int    // line of the opening fence, 1-based
	info   string // the fence's info string ("console", "sh", …)
	marker string // the "<!-- … -->" comment on the line before, if any
	lines  []string
}

var markerRE = regexp.MustCompile(`^<!--\s*(.*?)\s*-->$`)

// parseBlocks returns the fenced blocks of a Markdown document.
func parseBlocks(file string, data []byte) ([]docBlock, error) {
	var blocks []docBlock
	var cur *docBlock
	prev := ""
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			b := docBlock{file: file, line: i + 1, info: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
			if m := markerRE.FindStringSubmatch(strings.TrimSpace(prev)); m != nil {
				b.marker = m[1]
			}
			cur = &b
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		}
		prev = line
	}
	if cur != nil {
		return nil, fmt.Errorf("%s:%d: fenced block is never closed", file, cur.line)
	}
	return blocks, nil
}

// session is a console block split into commands, each with the output
// the document promises.
type session struct {
	cmds []sessionCmd
}

type sessionCmd struct {
	text []string // the command as written, continuation lines included
	want []string
}

func parseSession(b docBlock) (session, error) {
	var s session
	cont := false
	for i, l := range b.lines {
		switch {
		case cont:
			c := &s.cmds[len(s.cmds)-1]
			c.text = append(c.text, l)
			cont = strings.HasSuffix(l, `\`)
		case strings.HasPrefix(l, "$ "):
			s.cmds = append(s.cmds, sessionCmd{text: []string{strings.TrimPrefix(l, "$ ")}})
			cont = strings.HasSuffix(l, `\`)
		case len(s.cmds) == 0:
			return s, fmt.Errorf("%s:%d: console block must start with a \"$ \" command", b.file, b.line+1+i)
		default:
			c := &s.cmds[len(s.cmds)-1]
			c.want = append(c.want, l)
		}
	}
	if cont {
		return s, fmt.Errorf("%s:%d: the last command ends in a line continuation", b.file, b.line)
	}
	return s, nil
}

// script is the shell script that replays s: it prints each command as the
// document shows it, then runs it with $? still holding the previous
// command's status, so "echo $?" reports what the document says it does.
func (s session) script() string {
	var b strings.Builder
	b.WriteString("exec 2>&1\n__qwa_rc=0\n")
	for _, c := range s.cmds {
		b.WriteString("cat <<'__QWA_DOC_EOF__'\n$ " + strings.Join(c.text, "\n") + "\n__QWA_DOC_EOF__\n")
		b.WriteString("(exit $__qwa_rc)\n" + strings.Join(c.text, "\n") + "\n__qwa_rc=$?\n")
	}
	return b.String()
}

// transcript is what a reader of the block sees.
func (s session) transcript() []string {
	var out []string
	for _, c := range s.cmds {
		out = append(out, "$ "+c.text[0])
		out = append(out, c.text[1:]...)
		out = append(out, c.want...)
	}
	return out
}

// matchLines reports whether got matches want, where "…" in a want line
// matches any text and a want line of "…" alone matches any number of got
// lines. normalize is applied to both sides first.
func matchLines(want, got []string, normalize func(string) string) bool {
	if len(want) == 0 {
		return len(got) == 0
	}
	w := normalize(want[0])
	if w == "…" {
		for i := 0; i <= len(got); i++ {
			if matchLines(want[1:], got[i:], normalize) {
				return true
			}
		}
		return false
	}
	return len(got) > 0 && lineRE(w).MatchString(normalize(got[0])) && matchLines(want[1:], got[1:], normalize)
}

func lineRE(want string) *regexp.Regexp {
	parts := strings.Split(want, "…")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// trimRight drops trailing blanks and writes tabs as four spaces, so a
// document may indent with either.
func trimRight(s string) string {
	return strings.TrimRight(strings.ReplaceAll(s, "\t", "    "), " ")
}

var spaceRun = regexp.MustCompile(`\s+`)

func collapse(s string) string { return strings.TrimSpace(spaceRun.ReplaceAllString(s, " ")) }

// containsInOrder reports whether the want lines occur in got in order
// (other lines may come between), "…" lines being separators only.
func containsInOrder(want, got []string) (missing string, ok bool) {
	j := 0
	for _, w := range want {
		w = collapse(w)
		if w == "…" || w == "" {
			continue
		}
		re := lineRE(w)
		for j < len(got) && !re.MatchString(collapse(got[j])) {
			j++
		}
		if j == len(got) {
			return w, false
		}
		j++
	}
	return "", true
}

func docConditions(marker string) (skip string) {
	rest, ok := strings.CutPrefix(marker, "console:")
	if !ok {
		return ""
	}
	for _, cond := range strings.Fields(rest) {
		switch cond {
		case "root":
			if os.Getuid() != 0 {
				return "needs root"
			}
		case "ollama":
			if runtime.FindOllama() == "" {
				return "needs Ollama (scripts/build-ollama.sh, or QWA_OLLAMA)"
			}
		default:
			return "unknown condition " + cond
		}
	}
	return ""
}

func allBlocks(t *testing.T) []docBlock {
	t.Helper()
	var all []docBlock
	for _, f := range docFiles(t) {
		data, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		bs, err := parseBlocks(f, data)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, bs...)
	}
	return all
}

// TestDocSessions runs every console block of the documentation.
func TestDocSessions(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash")
	}
	n := 0
	files := map[string]map[string]string{} // document → file name → content
	for _, b := range allBlocks(t) {
		if name, ok := strings.CutPrefix(b.marker, "file:"); ok {
			if files[b.file] == nil {
				files[b.file] = map[string]string{}
			}
			files[b.file][strings.TrimSpace(name)] = strings.Join(b.lines, "\n") + "\n"
			continue
		}
		if b.info != "console" {
			continue
		}
		n++
		given := maps.Clone(files[b.file])
		t.Run(fmt.Sprintf("%s:%d", b.file, b.line), func(t *testing.T) {
			if why := docConditions(b.marker); why != "" {
				t.Skip(why)
			}
			s, err := parseSession(b)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			for name, content := range given {
				p := filepath.Join(dir, filepath.FromSlash(name))
				if !filepath.IsLocal(name) {
					t.Fatalf("%s:%d: file %q must be a relative path", b.file, b.line, name)
				}
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc")
			cmd.Dir = dir
			cmd.Stdin = strings.NewReader(s.script())
			cmd.Env = append(os.Environ(), "HOME="+dir, "SSH_CONNECTION=", "SSH_CLIENT=", "TZ=UTC", "LC_ALL=C.UTF-8", "NO_COLOR=1")
			if o := runtime.FindOllama(); o != "" {
				// What 'export QWA_OLLAMA=$(scripts/build-ollama.sh)' sets.
				cmd.Env = append(cmd.Env, "QWA_OLLAMA="+o)
			}
			out, err := cmd.Output()
			if ctx.Err() != nil {
				t.Fatalf("the session did not finish in time: %v\n%s", err, out)
			}
			got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
			want := s.transcript()
			if !matchLines(want, got, trimRight) {
				t.Errorf("%s:%d: the session's output differs from the document (\"…\" matches anything)\n--- document\n%s\n--- got\n%s",
					b.file, b.line, strings.Join(want, "\n"), strings.Join(got, "\n"))
			}
		})
	}
	if n == 0 {
		t.Fatal("no console blocks found: the convention or the parser broke")
	}
}

// TestDocExcerpts checks every block that quotes a golden file.
func TestDocExcerpts(t *testing.T) {
	for _, b := range allBlocks(t) {
		path, ok := strings.CutPrefix(b.marker, "excerpt:")
		if !ok {
			continue
		}
		path = strings.TrimSpace(path)
		data, err := os.ReadFile(filepath.Join(repoRoot, path))
		if err != nil {
			t.Errorf("%s:%d: excerpt of %s: %v", b.file, b.line, path, err)
			continue
		}
		if missing, ok := containsInOrder(b.lines, strings.Split(string(data), "\n")); !ok {
			t.Errorf("%s:%d: excerpt of %s: line %q is not in it (in this order); update the document from the file", b.file, b.line, path, missing)
		}
	}
}

var (
	linkRE    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRE = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
)

// anchors returns the GitHub anchors of a Markdown document's headings.
func anchors(data []byte) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	inFence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			inFence = !inFence
			continue
		}
		m := headingRE.FindStringSubmatch(line)
		if inFence || m == nil {
			continue
		}
		a := slug(m[1])
		if k := seen[a]; k > 0 {
			out[fmt.Sprintf("%s-%d", a, k)] = true
		} else {
			out[a] = true
		}
		seen[a]++
	}
	return out
}

// slug is GitHub's heading anchor: lower case, punctuation dropped, spaces
// as hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_':
			b.WriteRune(r)
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r > 127 && !strings.ContainsRune("—–…·“”‘’×→", r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocLinks checks that every relative link resolves, anchors included.
func TestDocLinks(t *testing.T) {
	for _, f := range docFiles(t) {
		data, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		// Links inside fenced blocks are code, not links.
		text := stripFences(data)
		for _, m := range linkRE.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			path := filepath.Join(repoRoot, f)
			if file != "" {
				path = filepath.Join(repoRoot, filepath.Dir(f), file)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Errorf("%s: link %s: %v", f, target, err)
				continue
			}
			if anchor == "" || st.IsDir() {
				continue
			}
			td, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s: link %s: %v", f, target, err)
				continue
			}
			if !anchors(td)[anchor] {
				t.Errorf("%s: link %s: no heading with anchor #%s in %s", f, target, anchor, file)
			}
		}
	}
}

func stripFences(data []byte) string {
	var b bytes.Buffer
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			in = !in
			continue
		}
		if !in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// TestReadmeSize keeps the README a front door: reference material goes
// to docs/.
func TestReadmeSize(t *testing.T) {
	st, err := os.Stat(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > readmeLimit {
		t.Errorf("README.md is %d bytes, over the %d-byte limit: move reference material to docs/", st.Size(), readmeLimit)
	}
}

// The matchers above decide what the documentation tests accept, so they
// are tested themselves, passing and failing.
func TestDocMatchers(t *testing.T) {
	for _, c := range []struct {
		want, got []string
		ok        bool
	}{
		{[]string{"a", "b"}, []string{"a", "b"}, true},
		{[]string{"a", "b"}, []string{"a", "c"}, false},
		{[]string{"a"}, []string{"a", "extra"}, false},
		{[]string{"wrote …/demo: 2 files"}, []string{"wrote /tmp/x/demo: 2 files"}, true},
		{[]string{"wrote …/demo: 2 files"}, []string{"wrote /tmp/x/demo: 3 files"}, false},
		{[]string{"a", "…", "z"}, []string{"a", "b", "c", "z"}, true},
		{[]string{"a", "…", "z"}, []string{"a", "z"}, true},
		{[]string{"a", "…", "z"}, []string{"a", "b"}, false},
		{[]string{"x.y"}, []string{"xzy"}, false}, // no regexp leaks through
	} {
		if got := matchLines(c.want, c.got, trimRight); got != c.ok {
			t.Errorf("matchLines(%q, %q) = %v, want %v", c.want, c.got, got, c.ok)
		}
	}
	if _, ok := containsInOrder([]string{"a  b", "…", "d"}, []string{"a b", "c", "d"}); !ok {
		t.Error("containsInOrder: collapsed white space and gaps should match")
	}
	if _, ok := containsInOrder([]string{"d", "a"}, []string{"a", "d"}); ok {
		t.Error("containsInOrder: lines out of order matched")
	}
	s, err := parseSession(docBlock{file: "x", lines: []string{"$ echo a \\", "  b", "a b", "$ false; echo $?", "1"}})
	if err != nil || len(s.cmds) != 2 || len(s.cmds[0].text) != 2 || s.cmds[1].want[0] != "1" {
		t.Errorf("parseSession: %+v, %v", s, err)
	}
	if _, err := parseSession(docBlock{file: "x", lines: []string{"output first"}}); err == nil {
		t.Error("parseSession accepted a block without a command")
	}
	for h, want := range map[string]string{
		"Failure and crashes":                       "failure-and-crashes",
		"Recovery without this program (fscrypt)":   "recovery-without-this-program-fscrypt",
		"Install, status and uninstall":             "install-status-and-uninstall",
		"`--meta`: model facts for manifest create": "--meta-model-facts-for-manifest-create",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}
