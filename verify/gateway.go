package verify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

func init() {
	register(
		Check{
			ID: "gateway.authentication", Title: "requests without a token or with a wrong token are refused",
			Severity: Critical, Controls: []string{"IA-2", "IA-5", "AC-3"},
			Rationale:   "The gateway is the only door to the model; it must not open without a valid token.",
			Remediation: "Restart the gateway with its token file (re-run install); never run the runtime without the gateway in front.",
			Run:         checkGatewayAuth,
		},
		Check{
			ID: "gateway.tls", Title: "the gateway refuses TLS below 1.2",
			Severity: High, Controls: []string{"SC-8", "SC-13"},
			Rationale:   "Prompts and completions cross the network only inside modern TLS.",
			Remediation: "Serve the gateway with --tls-cert/--tls-key (qwen-appliance tls init makes them); do not lower the minimum version.",
			Run:         checkGatewayTLS,
		},
		Check{
			ID: "gateway.runtime-routes", Title: "the runtime's admin, metrics and debug routes are unreachable through the gateway",
			Severity: High, Controls: []string{"CM-7", "AC-3", "AC-4"},
			Rationale:   "vLLM's /metrics and /tokenize, llama.cpp's /slots (other users' prompts) and Ollama's /api must never face clients.",
			Remediation: "Run the gateway from this release; only /v1/chat/completions, /v1/completions, /v1/models and /v1/embeddings are forwarded.",
			Run:         checkGatewayRoutes,
		},
	)
}

// gatewayClient returns an HTTP client for the recorded gateway: it trusts
// the recorded CA and dials inside the recorded network namespace.
func (t *Target) gatewayClient(maxTLS uint16) (*http.Client, *url.URL, error) {
	if t.State == nil || t.State.Gateway.URL == "" {
		return nil, nil, errNoGateway
	}
	u, err := url.Parse(t.State.Gateway.URL)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway URL %q: %w", t.State.Gateway.URL, err)
	}
	// The probe itself must offer old versions to see whether the server takes them.
	cfg := &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: maxTLS}
	if ca := t.State.Gateway.CACert; ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, nil, fmt.Errorf("gateway CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("gateway CA %s: no certificate found", ca)
		}
	}
	netns := t.State.Firewall.NetNS
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = inNetNS(netns, func() error {
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: dial, DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, u, nil
}

var errNoGateway = errors.New("install recorded no gateway")

// get sends a GET with an optional bearer token and returns the status.
func get(ctx context.Context, c *http.Client, base *url.URL, path, token string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.JoinPath(path).String(), nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp.StatusCode, nil
}

func checkGatewayAuth(ctx context.Context, t *Target) Outcome {
	c, base, err := t.gatewayClient(0)
	if errors.Is(err, errNoGateway) {
		return notApplicable(err.Error())
	}
	if err != nil {
		return errored(err)
	}
	var evs []Evidence
	bad := 0
	for _, tc := range []struct{ name, token string }{
		{"no token", ""},
		{"wrong token", "qwa_0000000000000000_verify-probe-not-a-real-secret-000000"},
		{"malformed token", "x"},
	} {
		code, err := get(ctx, c, base, "/v1/models", tc.token)
		if err != nil {
			return errored(fmt.Errorf("gateway %s: %w", base, err), evs...)
		}
		evs = append(evs, ev(tc.name, "GET /v1/models -> %d", code))
		// 429: the gateway slows down an address after repeated failures;
		// the request was refused all the same.
		if code != http.StatusUnauthorized && code != http.StatusForbidden && code != http.StatusTooManyRequests {
			bad++
		}
	}
	if bad > 0 {
		return fail(fmt.Sprintf("%d unauthenticated request(s) were not refused", bad), evs...)
	}
	return pass("unauthenticated and wrong-token requests are refused", evs...)
}

func checkGatewayTLS(ctx context.Context, t *Target) Outcome {
	if t.State == nil || t.State.Gateway.URL == "" {
		return notApplicable(errNoGateway.Error())
	}
	if !strings.HasPrefix(t.State.Gateway.URL, "https://") {
		return fail("the gateway serves plain HTTP", ev("url", "%s", t.State.Gateway.URL))
	}
	var evs []Evidence
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS 1.0", tls.VersionTLS10}, {"TLS 1.1", tls.VersionTLS11}} {
		c, base, err := t.gatewayClient(v.max)
		if err != nil {
			return errored(err)
		}
		code, err := get(ctx, c, base, "/v1/models", "")
		if err == nil {
			evs = append(evs, ev(v.name, "handshake accepted (status %d)", code))
			return fail(v.name+" is accepted", evs...)
		}
		evs = append(evs, ev(v.name, "refused: %v", err))
	}
	c, base, err := t.gatewayClient(0)
	if err != nil {
		return errored(err)
	}
	if _, err := get(ctx, c, base, "/v1/models", ""); err != nil {
		return errored(fmt.Errorf("modern TLS handshake failed too: %w", err), evs...)
	}
	evs = append(evs, ev("TLS 1.2+", "handshake accepted"))
	return pass("TLS 1.0 and 1.1 refused, TLS 1.2+ accepted", evs...)
}

// runtimeRoutes are routes inference servers expose that clients must never
// reach.
var runtimeRoutes = []string{"/metrics", "/health", "/slots", "/props", "/tokenize", "/detokenize", "/api/tags", "/api/pull", "/api/delete", "/v1/load_lora_adapter", "/server_info", "/reset_prefix_cache"}

func checkGatewayRoutes(ctx context.Context, t *Target) Outcome {
	c, base, err := t.gatewayClient(0)
	if errors.Is(err, errNoGateway) {
		return notApplicable(err.Error())
	}
	if err != nil {
		return errored(err)
	}
	var evs []Evidence
	var open []string
	for _, p := range runtimeRoutes {
		code, err := get(ctx, c, base, p, "")
		if err != nil {
			return errored(fmt.Errorf("GET %s: %w", p, err), evs...)
		}
		evs = append(evs, ev(p, "%d", code))
		if code < 400 {
			open = append(open, p)
		}
	}
	if len(open) > 0 {
		return fail("reachable through the gateway: "+strings.Join(open, ", "), evs...)
	}
	return pass(fmt.Sprintf("%d runtime routes refused", len(runtimeRoutes)), evs...)
}
