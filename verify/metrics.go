package verify

import (
	"bytes"
	"fmt"
)

// TextfileName is the file a scheduled verify rewrites in the node
// exporter's textfile directory; the appliance's alert rules read the series
// in it (FirewallMissing, StoreLocked, VerifyFailing, VerifyStale).
const TextfileName = "qwen_verify.prom"

// Metrics renders the report in the Prometheus text exposition format: one
// qwen_verify_check_ok series per check that ran (1 pass, 0 fail), one
// qwen_verify_check_error per check that could not run, the counts, and
// when the run finished. A check that did not apply has no series, so a rule
// on a check that must always run should also alert on its absence.
func (r *Report) Metrics() []byte {
	var b bytes.Buffer
	help := func(name, typ, text string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, typ)
	}
	help("qwen_verify_check_ok", "gauge", "1 when the check passed in the last verify run, 0 when it failed.")
	for _, res := range r.Results {
		if res.Status == Pass || res.Status == Fail {
			fmt.Fprintf(&b, "qwen_verify_check_ok{check=%q,severity=%q} %d\n", res.ID, res.Severity, boolInt(res.Status == Pass))
		}
	}
	help("qwen_verify_check_error", "gauge", "1 when the check could not run in the last verify run.")
	for _, res := range r.Results {
		if res.Status == Error {
			fmt.Fprintf(&b, "qwen_verify_check_error{check=%q,severity=%q} 1\n", res.ID, res.Severity)
		}
	}
	help("qwen_verify_checks", "gauge", "Checks in the last verify run, by status.")
	s := r.Summary
	for _, c := range []struct {
		status string
		n      int
	}{{"pass", s.Pass}, {"fail", s.Fail}, {"error", s.Error}, {"not-applicable", s.NotApplicable}} {
		fmt.Fprintf(&b, "qwen_verify_checks{status=%q} %d\n", c.status, c.n)
	}
	help("qwen_verify_last_run_timestamp_seconds", "gauge", "When the last verify run finished (Unix time).")
	fmt.Fprintf(&b, "qwen_verify_last_run_timestamp_seconds %d\n", r.Finished.Unix())
	return b.Bytes()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
