package preflight

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/qwen-appliance/qwen-appliance/provision/preflight/sizing"
)

// WriteTable writes the report for a person: one line per check with what
// was required, what was found and the result, then the plan, the verdict
// and the fix for every check that did not pass.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Preflight for %s version %d (runs on %s)\n\n", r.Bundle, r.Version, strings.ToUpper(string(r.Mode)))
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tREQUIRED\tFOUND\tRESULT")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, oneLine(c.Required), oneLine(c.Found), c.Status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if p := r.Plan; p != nil && p.Context > 0 {
		where := "RAM"
		if r.Mode == GPU {
			where = fmt.Sprintf("tensor parallel %d on GPU %s", p.TP, joinInts(p.Devices))
		}
		fmt.Fprintf(&b, "\nPlan: %s, context %d tokens × %d sequence(s) (up to %d at once), %s of %s usable per device\n",
			where, p.Context, p.Concurrency, p.MaxConcurrency,
			sizing.Bytes(p.Weights+p.KVPerToken*int64(p.Context)*int64(p.Concurrency)+p.Overhead), sizing.Bytes(p.Budget))
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
		fmt.Fprintf(&b, "  %s %s: %s\n", c.Status, c.Name, c.Fix)
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
