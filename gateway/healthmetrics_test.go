package gateway

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
)

func scrape(t *testing.T, h *harness, series string) float64 {
	t.Helper()
	resp, err := http.Get(h.metricsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + series + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("/metrics lacks %s", series)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The series the alert rules in deploy/ read follow the gateway's state.
func TestHealthSeries(t *testing.T) {
	dir := t.TempDir()
	if err := certs.Init(certs.Options{Dir: dir, Hosts: []string{"127.0.0.1"}, Validity: 40 * 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, func(o *Options) {
		o.TLSCert, o.TLSKey = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	})
	if v := scrape(t, h, "qwen_gateway_ready"); v != 1 {
		t.Errorf("ready %v with the upstream up", v)
	}
	if v := scrape(t, h, "qwen_gateway_audit_write_failing"); v != 0 {
		t.Errorf("audit_write_failing %v on a healthy log", v)
	}
	exp := scrape(t, h, "qwen_gateway_tls_cert_expiry_timestamp_seconds")
	if left := time.Until(time.Unix(int64(exp), 0)); left < 39*24*time.Hour || left > 41*24*time.Hour {
		t.Errorf("certificate expiry in %v, want about 40 days", left)
	}
	h.stopUp()
	if v := scrape(t, h, "qwen_gateway_ready"); v != 0 {
		t.Errorf("ready %v with the upstream down", v)
	}
}
