package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// upstream is the inference server: plain HTTP on a loopback address, or a
// Unix socket. The gateway never talks to anything else.
type upstream struct {
	base   string // scheme://host, no path
	host   string // the Host header sent
	client *http.Client
	pool   *connPool
}

// newUpstream parses http://127.0.0.1:PORT or unix:///path/to.sock. Other
// hosts are refused: the runtime must not be reachable from the network, so
// the gateway has no reason to talk to one that is.
func newUpstream(raw string, responseHeaderTimeout time.Duration, maxConns int) (*upstream, error) {
	tr := &http.Transport{
		MaxIdleConns:          maxConns,
		MaxIdleConnsPerHost:   maxConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: responseHeaderTimeout,
		DisableCompression:    true, // pass bytes through; SSE must not be buffered by gzip
		ForceAttemptHTTP2:     false,
	}
	u := &upstream{client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
	switch {
	case strings.HasPrefix(raw, "unix://"):
		path := strings.TrimPrefix(raw, "unix://")
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("upstream %q: want unix:///absolute/path.sock", raw)
		}
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		u.pool = &connPool{maxIdle: maxConns, dial: func(ctx context.Context) (net.Conn, error) { return tr.DialContext(ctx, "", "") }}
		u.base, u.host = "http://upstream", "upstream"
	case strings.HasPrefix(raw, "http://"):
		pu, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("upstream %q: %w", raw, err)
		}
		if pu.Path != "" && pu.Path != "/" || pu.RawQuery != "" || pu.User != nil {
			return nil, fmt.Errorf("upstream %q: give only scheme, host and port (no path, query or user)", raw)
		}
		host := pu.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("upstream %q: the model server must listen on loopback (127.0.0.1, ::1) or a Unix socket", raw)
		}
		u.base, u.host = "http://"+pu.Host, pu.Host
		var d net.Dialer
		u.pool = &connPool{maxIdle: maxConns, dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", pu.Host) }}
	default:
		return nil, fmt.Errorf("upstream %q: want http://127.0.0.1:PORT or unix:///path.sock", raw)
	}
	return u, nil
}

func (u *upstream) url(path string) string { return u.base + path }
