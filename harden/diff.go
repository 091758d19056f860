package harden

import "fmt"

// Diff compares a live table with the intended one and returns the
// differences as lines of "- live only" and "+ missing" text, chains first,
// then rules in order. Nil means identical.
func Diff(live, want *Table) []string {
	if live == nil && want == nil {
		return nil
	}
	if live == nil {
		return []string{fmt.Sprintf("+ table inet %s (missing)", TableName)}
	}
	if want == nil {
		return []string{fmt.Sprintf("- table inet %s (present, should be absent)", TableName)}
	}
	lines := func(t *Table, names map[string]string) []string {
		var out []string
		for _, c := range t.Chains {
			out = append(out, c.header())
			for _, r := range c.Rules {
				fp := r.Key
				if _, ok := names[fp]; !ok {
					names[fp] = fmt.Sprintf("rule %q (not an intended rule)", r.Comment)
				}
				out = append(out, c.Name+"\x00"+fp)
			}
		}
		return out
	}
	names := map[string]string{}
	for _, c := range want.Chains {
		for _, r := range c.Rules {
			names[r.Key] = fmt.Sprintf("rule %q", r.Comment)
		}
	}
	a, b := lines(live, names), lines(want, names)
	show := func(s string) string {
		for i := 0; i < len(s); i++ {
			if s[i] == 0 {
				return s[:i] + ": " + names[s[i+1:]]
			}
		}
		return s
	}
	var out []string
	for _, e := range lcsDiff(a, b) {
		out = append(out, e.op+" "+show(e.line))
	}
	return out
}

type edit struct {
	op   string
	line string
}

// lcsDiff returns the lines only in a ("-") and only in b ("+"), in order.
func lcsDiff(a, b []string) []edit {
	n, m := len(a), len(b)
	l := make([][]int, n+1)
	for i := range l {
		l[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				l[i][j] = l[i+1][j+1] + 1
			} else {
				l[i][j] = max(l[i+1][j], l[i][j+1])
			}
		}
	}
	var out []edit
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			i, j = i+1, j+1
		case i < n && (j == m || l[i+1][j] >= l[i][j+1]):
			out = append(out, edit{"-", a[i]})
			i++
		default:
			out = append(out, edit{"+", b[j]})
			j++
		}
	}
	return out
}
