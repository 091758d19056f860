package table

import (
	"strings"
	"testing"
)

func TestStringWidth(t *testing.T) {
	for _, tc := range []struct {
		s string
		w int
	}{{"abc", 3}, {"模型", 4}, {"ｑ", 2}, {"é", 1}, {"e\u0301", 1}, {"…", 1}, {"", 0}} {
		if got := StringWidth(tc.s); got != tc.w {
			t.Errorf("StringWidth(%q) = %d, want %d", tc.s, got, tc.w)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		s    string
		w    int
		want string
	}{{"abcdef", 6, "abcdef"}, {"abcdef", 4, "abc…"}, {"模型服务器", 5, "模型…"}, {"模型服务器", 6, "模型…"}, {"abc", 0, ""}} {
		got := Truncate(tc.s, tc.w)
		if got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.s, tc.w, got, tc.want)
		}
		if StringWidth(got) > max(tc.w, 0) {
			t.Errorf("Truncate(%q, %d) = %q is %d wide", tc.s, tc.w, got, StringWidth(got))
		}
	}
}

func TestTruncateStart(t *testing.T) {
	for _, tc := range []struct {
		s    string
		w    int
		want string
	}{{"/a/b/c.log", 10, "/a/b/c.log"}, {"/a/b/c.log", 6, "…c.log"}, {"/模型/服务器", 6, "…务器"}, {"/模型/服务器", 5, "…务器"}, {"/模型/服务器", 4, "…器"}, {"abc", 0, ""}} {
		got := TruncateStart(tc.s, tc.w)
		if got != tc.want {
			t.Errorf("TruncateStart(%q, %d) = %q, want %q", tc.s, tc.w, got, tc.want)
		}
		if StringWidth(got) > max(tc.w, 0) {
			t.Errorf("TruncateStart(%q, %d) = %q is %d wide", tc.s, tc.w, got, StringWidth(got))
		}
	}
}

func TestWrap(t *testing.T) {
	s := "fail NVIDIA driver: install the NVIDIA driver (it provides libnvidia-ml.so.1 and the nvidia kernel module), or use a CPU bundle"
	lines := Wrap(s, 40, "    ")
	if len(lines) < 3 {
		t.Fatalf("Wrap gave %d lines: %q", len(lines), lines)
	}
	for i, l := range lines {
		if StringWidth(l) > 40 {
			t.Errorf("line %d is %d wide: %q", i, StringWidth(l), l)
		}
		if i > 0 && !strings.HasPrefix(l, "    ") {
			t.Errorf("line %d lacks the indent: %q", i, l)
		}
	}
	if got := strings.Join(strings.Fields(strings.Join(lines, " ")), " "); got != s {
		t.Errorf("Wrap lost words: %q", got)
	}
	if l := Wrap("  fail x: y", 40, "    "); len(l) != 1 || l[0] != "  fail x: y" {
		t.Errorf("the first line lost its indent: %q", l)
	}
	if l := Wrap(strings.Repeat("x", 50), 10, ""); len(l) != 1 || StringWidth(l[0]) != 10 {
		t.Errorf("a word longer than the line: %q", l)
	}
}

func TestWrite(t *testing.T) {
	rows := [][]string{
		{"NVIDIA driver", "fail", "no NVIDIA driver found (looked for libnvidia-ml.so.1) " + strings.Repeat("and more ", 20)},
		{"知识库", "pass", "文档标题很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长很长"},
	}
	var b strings.Builder
	if err := Write(&b, 100, []string{"CHECK", "RESULT", "FOUND"}, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got %q", lines)
	}
	for _, l := range lines {
		if StringWidth(l) > 100 {
			t.Errorf("%d columns: %q", StringWidth(l), l)
		}
	}
	if !strings.HasPrefix(lines[1], "NVIDIA driver  fail    no NVIDIA") || !strings.HasSuffix(lines[1], "…") {
		t.Errorf("row not aligned or not cut: %q", lines[1])
	}
	// The columns line up in display columns, wide characters included.
	if i, j := strings.Index(lines[1], "fail"), strings.Index(lines[2], "pass"); StringWidth(lines[1][:i]) != StringWidth(lines[2][:j]) {
		t.Errorf("RESULT column misaligned:\n%s\n%s", lines[1], lines[2])
	}
	b.Reset()
	id := strings.Repeat("0123456789", 6)
	if err := Write(&b, 50, []string{"ID", "TITLE"}, [][]string{{id, strings.Repeat("t", 60)}}, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "ID ") || !strings.Contains(b.String(), id+"  tttt") || !strings.HasSuffix(b.String(), "…\n") {
		t.Errorf("a kept column was cut, or the other not: %q", b.String())
	}
	b.Reset()
	if err := Write(&b, 100, []string{"A", "B"}, [][]string{{"x\ty\nz", "w"}}); err != nil || b.String() != "A      B\nx y z  w\n" {
		t.Errorf("control characters not made spaces: %q %v", b.String(), err)
	}
	b.Reset()
	if err := Write(&b, 0, []string{"A", "B"}, [][]string{{strings.Repeat("x", 150), "y"}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), strings.Repeat("x", 150)+"  y") {
		t.Errorf("width 0 cut a cell: %q", b.String())
	}
}

// FuzzTable: whatever the cells hold (titles and findings come from outside:
// documents, hosts), no line is wider than asked once the headers fit, no
// row is lost, and wrapped text keeps within the width.
func FuzzTable(f *testing.F) {
	f.Add("NVIDIA driver", "no NVIDIA driver found (looked for libnvidia-ml.so.1)", "员工年假制度说明", 40)
	f.Add("", "\x00\t\n\u0301", "ｑｗｅｎ", 1)
	f.Add(strings.Repeat("x", 300), "a b c", "模", 100)
	f.Fuzz(func(t *testing.T, a, b, c string, w int) {
		w = (w%200+200)%200 + 30
		var out strings.Builder
		if err := Write(&out, w, []string{"A", "B", "C"}, [][]string{{a, b, c}, {c, a, b}}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("%d lines, want 3: %q", len(lines), out.String())
		}
		for _, l := range lines {
			if StringWidth(l) > w {
				t.Errorf("%d columns > %d: %q", StringWidth(l), w, l)
			}
		}
		for _, l := range Wrap(a+" "+b+" "+c, w, "  ") {
			if StringWidth(l) > w {
				t.Errorf("wrapped line of %d columns > %d: %q", StringWidth(l), w, l)
			}
		}
	})
}
