package gateway

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDeployFilesNameRealSeries keeps the Grafana dashboard and the alert
// rules in step with the series the gateway exports.
func TestDeployFilesNameRealSeries(t *testing.T) {
	m := newMetrics()
	m.observe(&exchange{route: "/v1/chat/completions", status: 200, tokenID: "t", latency: time.Second, ttft: 100 * time.Millisecond, promptTokens: 1, completionTokens: 10})
	m.upstreamErr.WithLabelValues("connect").Inc()
	m.authFail.WithLabelValues("unknown").Inc()
	m.limited.WithLabelValues("t", "rpm").Inc()
	m.kbOutcome([]string{"hr"}, "answered")
	m.kbDecisions.WithLabelValues("fit").Inc()
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range fams {
		have[f.GetName()] = true
	}
	re := regexp.MustCompile(`qwen_gateway_[a-z_]+`)
	for _, file := range []string{"deploy/grafana-dashboard.json", "deploy/gateway-alerts.yml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		names := re.FindAllString(string(data), -1)
		if len(names) == 0 {
			t.Fatalf("%s names no gateway series", file)
		}
		for _, n := range names {
			base := strings.TrimSuffix(n, "_bucket")
			if !have[base] {
				t.Errorf("%s uses %s, which the gateway does not export", file, n)
			}
		}
	}
}
