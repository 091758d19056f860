package preflight

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	texttable "github.com/qwen-appliance/qwen-appliance/internal/table"
	"github.com/qwen-appliance/qwen-appliance/provision/preflight/sizing"
)

// WriteTable writes the report for a person: one line per check with what
// was required, what was found and the result, then the plan, the verdict
// and the fix for every check that did not pass. With width > 0 every line
// fits in width columns: the REQUIRED column is left out, long findings are
// cut with "…" and the plan and fixes are wrapped; with width <= 0 nothing
// is left out or cut (--wide).
func (r *Report) WriteTable(w io.Writer, width int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Preflight for %s version %d (runs on %s)\n\n", r.Bundle, r.Version, strings.ToUpper(string(r.Mode)))
	if width > 0 {
		rows := make([][]string, 0, len(r.Checks))
		for _, c := range r.Checks {
			rows = append(rows, []string{c.Name, string(c.Status), oneLine(c.Found)})
		}
		if err := texttable.Write(&b, width, []string{"CHECK", "RESULT", "FOUND"}, rows); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tREQUIRED\tFOUND\tRESULT")
		for _, c := range r.Checks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, oneLine(c.Required), oneLine(c.Found), c.Status)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	// wrap keeps a line of prose within width, continuing it indented.
	wrap := func(s, indent string) {
		if width <= 0 {
			b.WriteString(s + "\n")
			return
		}
		for _, l := range texttable.Wrap(s, width, indent) {
			b.WriteString(l + "\n")
		}
	}
	if p := r.Plan; p != nil && p.Context > 0 {
		where := "RAM"
		if r.Mode == GPU {
			where = fmt.Sprintf("tensor parallel %d on GPU %s", p.TP, joinInts(p.Devices))
		}
		b.WriteString("\n")
		wrap(fmt.Sprintf("Plan: %s, context %d tokens × %d sequence(s) (up to %d at once), %s of %s usable per device",
			where, p.Context, p.Concurrency, p.MaxConcurrency,
			sizing.Bytes(p.Weights+p.KVPerToken*int64(p.Context)*int64(p.Concurrency)+p.Overhead), sizing.Bytes(p.Budget)), "  ")
	}
	failed, warned := 0, 0
	for _, c := range r.Checks {
		switch c.Status {
		case Fail:
			failed++
		case Warn:
			warned++
		}
	}
	fmt.Fprintf(&b, "\nVerdict: %s (%d failed, %d warnings, %d checks)\n", r.Verdict, failed, warned, len(r.Checks))
	first := true
	for _, c := range r.Checks {
		if c.Fix == "" || c.Status == Pass {
			continue
		}
		if first {
			b.WriteString("\nWhat to do:\n")
			first = false
		}
		wrap(fmt.Sprintf("  %s %s: %s", c.Status, c.Name, c.Fix), "      ")
	}
	if width > 0 {
		b.WriteString("\n(--wide shows what each check requires and the full findings; --json all of it)\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
