package gateway

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// registerHealth adds the series the alert rules in deploy/ need, computed
// at scrape time: readiness exactly as /readyz decides it, whether the audit
// log is failing (requests are refused then), and when the served
// certificate expires. Registering twice is harmless.
func (g *Gateway) registerHealth() {
	const ns = "qwen_gateway"
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "ready",
			Help: "1 when /readyz answers ready: the upstream runtime serves at least one model (checked at scrape, 3s timeout)."},
			func() float64 {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				if n, err := g.upstreamModels(ctx); err != nil || n == 0 {
					return 0
				}
				return 1
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "audit_write_failing",
			Help: "1 when the audit log cannot be written; the gateway then refuses requests rather than serve them unaudited."},
			func() float64 {
				if g.audit.Err() != nil {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "tls_cert_expiry_timestamp_seconds",
			Help: "When the served TLS certificate expires (Unix time); 0 without TLS."},
			func() float64 {
				if g.certs == nil {
					return 0
				}
				if c := g.certs.cur.Load(); c != nil && c.Leaf != nil {
					return float64(c.Leaf.NotAfter.Unix())
				}
				return 0
			}),
	} {
		_ = g.metrics.reg.Register(c)
	}
}
