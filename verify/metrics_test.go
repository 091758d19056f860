package verify

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMetricsFeedTheAlertRules: every qwen_verify_ series and every check ID
// the alert rules name is one verify writes, so a renamed check cannot leave
// FirewallMissing or StoreLocked silently matching nothing.
func TestMetricsFeedTheAlertRules(t *testing.T) {
	rep := &Report{Finished: time.Unix(1700000000, 0)}
	for i, c := range Checks() {
		st := Pass
		if i%2 == 1 {
			st = Fail
		}
		rep.Results = append(rep.Results, Result{ID: c.ID, Severity: c.Severity, Status: st})
	}
	rep.Results = append(rep.Results, Result{ID: "x.errored", Severity: Low, Status: Error})
	out := string(rep.Metrics())
	rules, err := os.ReadFile("../gateway/deploy/appliance-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`qwen_verify_[a-z_]+`).FindAllString(string(rules), -1)
	if len(names) < 4 {
		t.Fatalf("the alert rules name %d verify series", len(names))
	}
	for _, n := range names {
		if !strings.Contains(out, "\n"+n+"{") && !strings.Contains(out, "\n"+n+" ") {
			t.Errorf("the alert rules use %s, which verify does not write", n)
		}
	}
	ids := map[string]bool{}
	for _, c := range Checks() {
		ids[c.ID] = true
	}
	for _, m := range regexp.MustCompile(`check=~?"([^"]+)"`).FindAllStringSubmatch(string(rules), -1) {
		for _, id := range strings.Split(strings.ReplaceAll(m[1], `\\.`, "."), "|") {
			if !ids[id] {
				t.Errorf("the alert rules name check %q, which verify does not have", id)
			}
		}
	}
	for _, want := range []string{
		`qwen_verify_check_ok{check="storage.unlocked",severity="high"}`,
		`qwen_verify_check_error{check="x.errored",severity="low"} 1`,
		"qwen_verify_last_run_timestamp_seconds 1700000000\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %s:\n%s", want, out)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(rep.Metrics())
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, b)
	}
}
