package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// dnsName is a host name as DNS spells it: dot-separated labels of letters,
// digits and inner hyphens.
var dnsName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// upstream is the inference server: plain HTTP on a loopback address, a
// Unix socket, or HTTPS with mutual TLS (a runtime on another host or pod).
// The gateway never talks to anything else.
type upstream struct {
	base   string // scheme://host, no path
	host   string // the Host header sent
	client *http.Client
	pool   *connPool
	cert   *keyPair // the gateway's own certificate for https://; nil otherwise
}

// UpstreamError is an upstream setting the gateway refuses before it
// starts: a scheme or address it does not talk to, or TLS settings that do
// not fit the scheme. Flag names the setting to fix.
type UpstreamError struct {
	Upstream string
	Flag     string
	Reason   string
}

func (e *UpstreamError) Error() string {
	return fmt.Sprintf("upstream %q: %s", e.Upstream, e.Reason)
}

// newUpstream parses http://127.0.0.1:PORT, unix:///path/to.sock or
// https://HOST:PORT. Plain HTTP to any other host is refused: prompts,
// answers and the runtime's unauthenticated routes would cross the network
// in the clear, to whoever answers on that address. HTTPS needs
// o.UpstreamCA (the only roots the runtime's certificate may chain to) and
// o.UpstreamCert and o.UpstreamKey (the gateway's client certificate), so
// that each side knows the other. Setting errors are *UpstreamError.
func newUpstream(raw string, o *Options) (*upstream, error) {
	maxConns := o.MaxConcurrent
	tr := &http.Transport{
		MaxIdleConns:          maxConns,
		MaxIdleConnsPerHost:   maxConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: o.UpstreamTimeout,
		DisableCompression:    true, // pass bytes through; SSE must not be buffered by gzip
		ForceAttemptHTTP2:     false,
	}
	u := &upstream{client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
	refuse := func(flag, format string, args ...any) error {
		return &UpstreamError{Upstream: raw, Flag: flag, Reason: fmt.Sprintf(format, args...)}
	}
	tlsSet := o.UpstreamCA != "" || o.UpstreamCert != "" || o.UpstreamKey != "" || o.UpstreamServerName != ""
	if tlsSet && !strings.HasPrefix(raw, "https://") {
		return nil, refuse("upstream", "--upstream-ca, --upstream-cert, --upstream-key and --upstream-server-name apply only to an https:// upstream")
	}
	switch {
	case strings.HasPrefix(raw, "unix://"):
		path := strings.TrimPrefix(raw, "unix://")
		if !strings.HasPrefix(path, "/") {
			return nil, refuse("upstream", "want unix:///absolute/path.sock")
		}
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		u.pool = &connPool{maxIdle: maxConns, dial: func(ctx context.Context) (net.Conn, error) { return tr.DialContext(ctx, "", "") }}
		u.base, u.host = "http://upstream", "upstream"
	case strings.HasPrefix(raw, "http://"), strings.HasPrefix(raw, "https://"):
		pu, err := url.Parse(raw)
		if err != nil {
			return nil, refuse("upstream", "%v", err)
		}
		if pu.Path != "" && pu.Path != "/" || pu.RawQuery != "" || pu.User != nil || pu.Scheme == "https" && pu.Port() == "" {
			return nil, refuse("upstream", "give only scheme, host and port (no path, query or user)")
		}
		host := pu.Hostname()
		ip := net.ParseIP(host)
		if ip == nil && !dnsName.MatchString(host) {
			return nil, refuse("upstream", "host %q is neither an IP address nor a DNS name (an unexpanded $(VAR) means the environment variable was not set)", host)
		}
		loopback := host == "localhost" || ip != nil && ip.IsLoopback()
		if pu.Scheme == "http" && !loopback {
			return nil, refuse("upstream", "plain HTTP must stay on this host: the model server must listen on loopback (127.0.0.1, ::1) or a Unix socket; "+
				"a runtime elsewhere is reached only as https:// with mutual TLS (--upstream-ca, --upstream-cert, --upstream-key), "+
				"because its traffic and its unauthenticated routes would otherwise be open to anyone on the network")
		}
		u.base, u.host = pu.Scheme+"://"+pu.Host, pu.Host
		var d net.Dialer
		dial := func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", pu.Host) }
		if pu.Scheme == "https" {
			cfg, cert, err := upstreamTLS(raw, host, o)
			if err != nil {
				return nil, err
			}
			u.cert = cert
			tr.TLSClientConfig = cfg
			td := &tls.Dialer{NetDialer: &d, Config: cfg}
			dial = func(ctx context.Context) (net.Conn, error) { return td.DialContext(ctx, "tcp", pu.Host) }
		}
		u.pool = &connPool{maxIdle: maxConns, dial: dial}
	default:
		return nil, refuse("upstream", "want http://127.0.0.1:PORT, unix:///path.sock or https://HOST:PORT (with mutual TLS)")
	}
	return u, nil
}

// upstreamTLS is the client side of mutual TLS with the runtime: TLS 1.2 or
// later with AEAD suites, the runtime's certificate checked against
// UpstreamCA alone and for UpstreamServerName (else the URL's host), and the
// gateway's client certificate presented.
func upstreamTLS(raw, host string, o *Options) (*tls.Config, *keyPair, error) {
	for _, f := range []struct{ flag, val string }{{"upstream-ca", o.UpstreamCA}, {"upstream-cert", o.UpstreamCert}, {"upstream-key", o.UpstreamKey}} {
		if f.val == "" {
			return nil, nil, &UpstreamError{Upstream: raw, Flag: f.flag, Reason: "an https:// upstream needs mutual TLS: pass --upstream-ca (the CA that signed the runtime's certificate), " +
				"--upstream-cert and --upstream-key (the gateway's client certificate); --" + f.flag + " is missing"}
		}
	}
	pem, err := os.ReadFile(o.UpstreamCA)
	if err != nil {
		return nil, nil, fmt.Errorf("read upstream CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, nil, fmt.Errorf("upstream CA %s holds no PEM certificate", o.UpstreamCA)
	}
	cc := &keyPair{what: "upstream client", certFile: o.UpstreamCert, keyFile: o.UpstreamKey}
	if err := cc.load(); err != nil {
		return nil, nil, err
	}
	name := o.UpstreamServerName
	if name == "" {
		name = host
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		CipherSuites:         aeadSuites,
		RootCAs:              roots,
		ServerName:           name,
		GetClientCertificate: cc.clientCert,
		NextProtos:           []string{"http/1.1"},
	}, cc, nil
}

func (u *upstream) url(path string) string { return u.base + path }
