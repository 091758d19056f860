package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAlertReachesWebhook runs Debian's prometheus and
// prometheus-alertmanager on loopback against a real gateway: the runtime
// behind it is killed, and the RuntimeNotReady alert from
// deploy/appliance-alerts.yml (its "for" shortened) must arrive at a webhook
// receiver the test serves. Skips without the two programs.
func TestAlertReachesWebhook(t *testing.T) {
	prom, err1 := exec.LookPath("prometheus")
	am, err2 := exec.LookPath("prometheus-alertmanager")
	if err1 != nil || err2 != nil {
		t.Skip("needs prometheus and prometheus-alertmanager (apt-get install prometheus prometheus-alertmanager)")
	}
	if testing.Short() {
		t.Skip("starts Prometheus and Alertmanager")
	}
	h := newHarness(t, nil)
	dir := t.TempDir()

	alerts := make(chan string, 100)
	hook := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct {
			Alerts []struct {
				Status string            `json:"status"`
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		body, _ := io.ReadAll(r.Body)
		if json.Unmarshal(body, &msg) == nil {
			for _, a := range msg.Alerts {
				alerts <- a.Status + " " + a.Labels["alertname"]
			}
		}
	})}
	hookLn := listen(t)
	go hook.Serve(hookLn)
	t.Cleanup(func() { hook.Close() })

	rules, err := os.ReadFile("deploy/appliance-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`for: \d+[smh]`).ReplaceAll(rules, []byte("for: 1s"))
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("rules.yml", string(rules))
	amAddr, promAddr := freeAddr(t), freeAddr(t)
	metricsAddr := strings.TrimPrefix(h.metricsURL, "http://")
	promCfg := write("prometheus.yml", fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: qwen-gateway
    static_configs: [{targets: [%q]}]
rule_files: [rules.yml]
alerting:
  alertmanagers: [{static_configs: [{targets: [%q]}]}]
`, metricsAddr, amAddr))
	// The example's routing, with the webhook pointed at the test and the
	// email receiver left out (no mail relay on loopback).
	amCfg := write("alertmanager.yml", fmt.Sprintf(`route: {receiver: operators, group_by: [alertname, instance], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}
receivers:
  - name: operators
    webhook_configs: [{url: "http://%s/alerts", send_resolved: true}]
`, hookLn.Addr()))

	start := func(name string, args ...string) {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, name, args...)
		log, _ := os.Create(filepath.Join(dir, filepath.Base(name)+".log"))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cancel()
			cmd.Wait()
			log.Close()
			if t.Failed() {
				b, _ := os.ReadFile(log.Name())
				t.Logf("%s log:\n%s", name, tail(b, 3000))
			}
		})
	}
	start(am, "--config.file="+amCfg, "--storage.path="+filepath.Join(dir, "am"), "--web.listen-address="+amAddr, "--cluster.listen-address=")
	start(prom, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "prom"), "--web.listen-address="+promAddr)

	// Healthy first: nothing but the backup alert (no textfile series here).
	time.Sleep(3 * time.Second)
	for len(alerts) > 0 {
		if a := <-alerts; a == "firing RuntimeNotReady" {
			t.Fatal("RuntimeNotReady fired while the runtime was up")
		}
	}
	h.stopUp()
	deadline := time.After(90 * time.Second)
	for {
		select {
		case a := <-alerts:
			t.Logf("webhook: %s", a)
			if a == "firing RuntimeNotReady" {
				return
			}
		case <-deadline:
			t.Fatal("RuntimeNotReady did not reach the webhook within 90s of the runtime going down")
		}
	}
}

func listen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func freeAddr(t *testing.T) string {
	ln := listen(t)
	defer ln.Close()
	return ln.Addr().String()
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
