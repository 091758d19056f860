// Package table lays out text tables for a terminal of a given width,
// counting East Asian wide characters as two columns. It never drops a row:
// a cell too long for its column is cut and ends with "…", and the full text
// stays in the command's --wide or --json output.
package table

import (
	"io"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/text/width"
)

// Width is what tables fit in unless a command is told otherwise (--wide).
const Width = 100

// gap is the space between columns.
const gap = 2

// RuneWidth is the number of terminal columns r takes: 2 for East Asian wide
// and fullwidth characters, 0 for combining marks and controls, else 1.
func RuneWidth(r rune) int {
	switch {
	case r < 0x20 || r == 0x7f || unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r):
		return 0
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

// StringWidth is the number of terminal columns s takes.
func StringWidth(s string) int {
	n := 0
	for _, r := range s {
		n += RuneWidth(r)
	}
	return n
}

// Truncate cuts s to at most w columns, ending it with "…" when cut.
func Truncate(s string, w int) string {
	if StringWidth(s) <= w {
		return s
	}
	if w <= 0 {
		return ""
	}
	var b strings.Builder
	n := 0
	for _, r := range s {
		rw := RuneWidth(r)
		if n+rw > w-1 {
			break
		}
		b.WriteRune(r)
		n += rw
	}
	return b.String() + "…"
}

// TruncateStart cuts s to at most w columns from its start, beginning it
// with "…" when cut: for paths, whose end names the file.
func TruncateStart(s string, w int) string {
	if StringWidth(s) <= w {
		return s
	}
	if w <= 0 {
		return ""
	}
	rs := []rune(s)
	n, i := 0, len(rs)
	for i > 0 && n+RuneWidth(rs[i-1]) <= w-1 {
		i--
		n += RuneWidth(rs[i])
	}
	return "…" + string(rs[i:])
}

// Wrap breaks s into lines of at most w columns at spaces, the first keeping
// s's leading spaces and every later one starting with indent. A word longer than a line is cut with "…"
// rather than overflow.
func Wrap(s string, w int, indent string) []string {
	var lines []string
	lead := s[:len(s)-len(strings.TrimLeft(s, " "))] // the first line keeps its indent
	line := ""
	for _, word := range strings.Fields(s) {
		prefix := lead
		if len(lines) > 0 {
			prefix = indent
		}
		if line != "" && StringWidth(prefix+line+" "+word) > w {
			lines = append(lines, Truncate(prefix+line, w))
			line = word
			continue
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" || len(lines) == 0 {
		prefix := lead
		if len(lines) > 0 {
			prefix = indent
		}
		lines = append(lines, Truncate(prefix+line, w))
	}
	return lines
}

// Write lays header and rows out in aligned columns no wider than w in all
// (w <= 0: no limit). When they do not fit, the widest column is narrowed,
// one column at a time, each cut cell ending with "…"; a column keeps at
// least its header, and the columns keep (identifiers) are never cut, even
// if the table then stays wider than w.
func Write(out io.Writer, w int, header []string, rows [][]string, keep ...int) error {
	cols := len(header)
	widths := make([]int, cols)
	for _, r := range append([][]string{header}, rows...) {
		for i := 0; i < cols && i < len(r); i++ {
			widths[i] = max(widths[i], StringWidth(oneLine(r[i])))
		}
	}
	if w > 0 {
		total := func() int {
			t := gap * (cols - 1)
			for _, x := range widths {
				t += x
			}
			return t
		}
		for total() > w {
			widest := -1
			for i := range widths {
				if !slices.Contains(keep, i) && (widest < 0 || widths[i] > widths[widest]) {
					widest = i
				}
			}
			if widest < 0 || widths[widest] <= max(StringWidth(header[widest]), 4) {
				break // cannot narrow further without losing headers
			}
			widths[widest]--
		}
	}
	var b strings.Builder
	for _, r := range append([][]string{header}, rows...) {
		var line strings.Builder
		for i := 0; i < cols; i++ {
			cell := ""
			if i < len(r) {
				cell = oneLine(r[i])
			}
			cell = Truncate(cell, widths[i])
			line.WriteString(cell)
			if i < cols-1 {
				line.WriteString(strings.Repeat(" ", widths[i]-StringWidth(cell)+gap))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// oneLine turns the control characters of a cell (newlines, tabs, which a
// terminal would widen) into spaces.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
