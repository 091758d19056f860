package gateway

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// TestAlertRules checks the appliance's alert rules, the Prometheus
// configuration and the Alertmanager example with Debian's promtool and
// amtool, and runs the rules' unit tests (deploy/appliance-alerts_test.yml).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("needs promtool (apt-get install prometheus)")
	}
	for _, args := range [][]string{
		{"check", "rules", "appliance-alerts.yml", "gateway-alerts.yml"},
		{"check", "config", "prometheus.yml"},
		{"test", "rules", "appliance-alerts_test.yml"},
		{"test", "rules", "gateway-alerts_test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "deploy"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
	if amtool, err := exec.LookPath("amtool"); err == nil {
		if out, err := exec.Command(amtool, "check-config", "deploy/alertmanager.yml").CombinedOutput(); err != nil {
			t.Errorf("amtool check-config: %v\n%s", err, out)
		}
	}
}

// The appliance rules name only series a running gateway exports.
func TestApplianceAlertsNameRealSeries(t *testing.T) {
	h := newHarness(t, nil)
	h.g.registerHealth()
	fams, err := h.g.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	data, err := os.ReadFile("deploy/appliance-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`qwen_gateway_[a-z_]+`).FindAllString(string(data), -1)
	if len(names) < 3 {
		t.Fatalf("appliance-alerts.yml names %d gateway series", len(names))
	}
	for _, n := range names {
		if !have[n] {
			t.Errorf("appliance-alerts.yml uses %s, which the gateway does not export", n)
		}
	}
}
