package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
)

// pairDir makes a runtime CA with a server certificate for hosts and the
// gateway's client certificate, as 'tls pair' does.
func pairDir(t testing.TB, hosts ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pair")
	if err := certs.Pair(certs.Options{Dir: dir, Hosts: hosts}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mtlsRuntime is a model server on 127.0.0.1 serving TLS with the runtime
// certificate from serverDir and admitting only clients whose certificate
// chains to clientCADir's CA, as vLLM does with --ssl-cert-reqs 2. It
// records the subject of the last client certificate it saw.
func mtlsRuntime(t *testing.T, serverDir, clientCADir string) (url string, lastClient *atomic.Value) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(serverDir, certs.RuntimeCertFile), filepath.Join(serverDir, certs.RuntimeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(clientCADir, certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	lastClient = &atomic.Value{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastClient.Store(r.TLS.PeerCertificates[0].Subject.CommonName)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/v1/models":
			io.WriteString(w, `{"object":"list","data":[{"id":"qwen","object":"model"}]}`)
		case "/v1/chat/completions":
			io.WriteString(w, `{"id":"c1","object":"chat.completion","model":"qwen","choices":[{"index":0,"message":{"role":"assistant","content":"answered over mutual TLS"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
	s.Config.ErrorLog = nil
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.URL, lastClient
}

// withUpstreamTLS points the gateway at up with the CA from caDir and the
// client certificate from clientDir.
func withUpstreamTLS(up, caDir, clientDir, serverName string) func(*Options) {
	return func(o *Options) {
		o.Upstream = up
		o.UpstreamCA = filepath.Join(caDir, certs.CAFile)
		o.UpstreamCert = filepath.Join(clientDir, certs.ClientCertFile)
		o.UpstreamKey = filepath.Join(clientDir, certs.ClientKeyFile)
		o.UpstreamServerName = serverName
	}
}

func (h *harness) metric(name string) string {
	h.t.Helper()
	resp, err := http.Get(h.metricsURL + "/metrics")
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

func (h *harness) readyz() int {
	h.t.Helper()
	resp, err := http.Get(h.metricsURL + "/readyz")
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The gateway reaches a runtime on another address only with mutual TLS:
// it succeeds with the pair's certificates, and fails closed when the
// runtime's certificate is from another CA or names another host, or when
// the gateway has no client certificate the runtime accepts.
func TestUpstreamMutualTLS(t *testing.T) {
	pair := pairDir(t, "qwen-runtime", "127.0.0.1")
	up, seen := mtlsRuntime(t, pair, pair)

	t.Run("the pair's certificates", func(t *testing.T) {
		h := newHarness(t, withUpstreamTLS(up, pair, pair, ""))
		code, _, body := h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", nil))
		if code != 200 || !strings.Contains(string(body), "answered over mutual TLS") {
			t.Fatalf("over mutual TLS: %d %s", code, body)
		}
		if got, _ := seen.Load().(string); got != certs.ClientName {
			t.Errorf("the runtime saw client certificate %q, want %q", got, certs.ClientName)
		}
		if c := h.readyz(); c != 200 {
			t.Errorf("/readyz over TLS: %d", c)
		}
		if v := h.metric("qwen_gateway_ready"); v != "1" {
			t.Errorf("qwen_gateway_ready %q over TLS", v)
		}
		// SIGHUP re-reads the client certificate (for new connections)
		// and keeps serving.
		if err := h.g.Reload(); err != nil {
			t.Errorf("reload: %v", err)
		}
		if code, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil); code != 200 {
			t.Errorf("after reload: %d", code)
		}
	})

	t.Run("the runtime's name given apart from its address", func(t *testing.T) {
		named := pairDir(t, "qwen-runtime") // no IP address in the certificate
		up, _ := mtlsRuntime(t, named, named)
		h := newHarness(t, withUpstreamTLS(up, named, named, ""))
		if code, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil); code != http.StatusBadGateway {
			t.Errorf("a certificate that does not name 127.0.0.1 was accepted for it: %d", code)
		}
		h = newHarness(t, withUpstreamTLS(up, named, named, "qwen-runtime"))
		if code, _, body := h.do("GET", "/v1/models", h.tok["user"], nil); code != 200 {
			t.Errorf("with --upstream-server-name qwen-runtime: %d %s", code, body)
		}
		h = newHarness(t, withUpstreamTLS(up, named, named, "other-runtime"))
		if code, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil); code != http.StatusBadGateway {
			t.Errorf("a certificate for qwen-runtime was accepted as other-runtime: %d", code)
		}
	})

	t.Run("a runtime certificate from another CA", func(t *testing.T) {
		other := pairDir(t, "qwen-runtime", "127.0.0.1")
		impostor, _ := mtlsRuntime(t, other, pair) // admits our client, but is not signed by our CA
		h := newHarness(t, withUpstreamTLS(impostor, pair, pair, ""))
		if code, _, body := h.do("POST", "/v1/chat/completions", h.tok["user"], chat("qwen", nil)); code != http.StatusBadGateway || strings.Contains(string(body), "mutual TLS") {
			t.Errorf("an impostor runtime was used: %d %s", code, body)
		}
		if c := h.readyz(); c != http.StatusServiceUnavailable {
			t.Errorf("/readyz with an impostor runtime: %d", c)
		}
		if v := h.metric("qwen_gateway_ready"); v != "0" {
			t.Errorf("qwen_gateway_ready %q with an impostor runtime", v)
		}
	})

	t.Run("a client certificate from another CA", func(t *testing.T) {
		other := pairDir(t, "qwen-runtime", "127.0.0.1")
		h := newHarness(t, withUpstreamTLS(up, pair, other, ""))
		if code, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil); code != http.StatusBadGateway {
			t.Errorf("the runtime accepted a client certificate from another CA: %d", code)
		}
	})

	t.Run("no client certificate", func(t *testing.T) {
		h := newHarness(t, withUpstreamTLS(up, pair, pair, ""))
		h.g.upstream.Load().cert.cur.Store(&tls.Certificate{}) // send none
		if code, _, _ := h.do("GET", "/v1/models", h.tok["user"], nil); code != http.StatusBadGateway {
			t.Errorf("the runtime served a gateway without a client certificate: %d", code)
		}
		if c := h.readyz(); c != http.StatusServiceUnavailable {
			t.Errorf("/readyz without a client certificate: %d", c)
		}
	})
}

// Settings that would send traffic off the host unauthenticated are refused
// before the gateway starts, naming the flag; loopback HTTP still works.
func TestUpstreamSettingsRefused(t *testing.T) {
	pair := pairDir(t, "qwen-runtime")
	ok := func(o *Options) {
		o.UpstreamCA = filepath.Join(pair, certs.CAFile)
		o.UpstreamCert = filepath.Join(pair, certs.ClientCertFile)
		o.UpstreamKey = filepath.Join(pair, certs.ClientKeyFile)
	}
	for _, c := range []struct {
		name, upstream, flag, want string
		edit                       func(*Options)
	}{
		{"plain HTTP off the host", "http://10.1.2.3:8000", "upstream", "plain HTTP must stay on this host", nil},
		{"plain HTTP to a name", "http://qwen-runtime:8000", "upstream", "plain HTTP must stay on this host", nil},
		{"plain HTTP off the host with TLS files", "http://10.1.2.3:8000", "upstream", "apply only to an https:// upstream", ok},
		{"TLS files with a loopback HTTP upstream", "http://127.0.0.1:8000", "upstream", "apply only to an https:// upstream", ok},
		{"HTTPS without a CA", "https://qwen-runtime:8000", "upstream-ca", "--upstream-ca is missing", func(o *Options) { ok(o); o.UpstreamCA = "" }},
		{"HTTPS without a client certificate", "https://qwen-runtime:8000", "upstream-cert", "--upstream-cert is missing", func(o *Options) { ok(o); o.UpstreamCert = "" }},
		{"HTTPS without a client key", "https://qwen-runtime:8000", "upstream-key", "--upstream-key is missing", func(o *Options) { ok(o); o.UpstreamKey = "" }},
		{"an unexpanded variable", "https://$(REL_QWEN_APPLIANCE_RUNTIME_SERVICE_HOST):8000", "upstream", "unexpanded $(VAR)", ok},
		{"HTTPS without a port", "https://qwen-runtime", "upstream", "give only scheme, host and port", ok},
		{"HTTPS with a path", "https://qwen-runtime:8000/v1", "upstream", "give only scheme, host and port", ok},
	} {
		o := Options{}
		if c.edit != nil {
			c.edit(&o)
		}
		_, err := newUpstream(c.upstream, &o)
		var ue *UpstreamError
		if !errors.As(err, &ue) || ue.Flag != c.flag || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want an UpstreamError for --%s saying %q", c.name, err, c.flag, c.want)
		}
	}
	// Accepted: loopback HTTP as before, and HTTPS anywhere with all three.
	for _, up := range []string{"http://127.0.0.1:8000", "http://[::1]:8000", "http://localhost:8000", "unix:///run/x.sock"} {
		if _, err := newUpstream(up, &Options{}); err != nil {
			t.Errorf("%s: %v", up, err)
		}
	}
	o := Options{}
	ok(&o)
	for _, up := range []string{"https://qwen-runtime:8000", "https://rel-qwen-appliance-runtime.llm.svc:8000", "https://10.96.0.12:8000", "https://[fd00:10:96::a]:8000"} {
		if _, err := newUpstream(up, &o); err != nil {
			t.Errorf("%s with mutual TLS: %v", up, err)
		}
	}
	// The client key obeys serve's rule for keys: its owner's alone.
	if err := os.Chmod(o.UpstreamKey, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := newUpstream("https://qwen-runtime:8000", &o); err == nil || !strings.Contains(err.Error(), "lets others read it; chmod 600") {
		t.Errorf("a group-readable client key: %v", err)
	}
}

// FuzzUpstream feeds arbitrary --upstream values to the parser: it never
// panics, and what it accepts is a Unix socket, plain HTTP to a loopback
// address, or HTTPS, which carries the client certificate.
func FuzzUpstream(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8000", "http://10.0.0.1:8000", "https://qwen-runtime:8000", "https://[::1]:1",
		"unix:///x.sock", "http://localhost", "https://$(X):8000", "http://[::ffff:127.0.0.1]:80", "https://a..b:1", "http://0x7f.1:80"} {
		f.Add(s)
	}
	pair := pairDir(f, "qwen-runtime")
	f.Fuzz(func(t *testing.T, raw string) {
		o := Options{UpstreamCA: filepath.Join(pair, certs.CAFile), UpstreamCert: filepath.Join(pair, certs.ClientCertFile), UpstreamKey: filepath.Join(pair, certs.ClientKeyFile)}
		for _, o := range []Options{{}, o} {
			u, err := newUpstream(raw, &o)
			if err != nil {
				continue
			}
			switch {
			case strings.HasPrefix(u.base, "https://"):
				if u.cert == nil || o.UpstreamCA == "" {
					t.Fatalf("%q accepted as HTTPS without mutual TLS", raw)
				}
			case u.base == "http://upstream":
				if !strings.HasPrefix(raw, "unix:///") {
					t.Fatalf("%q accepted as a socket", raw)
				}
			default:
				host, _, err := net.SplitHostPort(u.host)
				if err != nil {
					host = strings.Trim(u.host, "[]")
				}
				if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
					t.Fatalf("%q accepted as plain HTTP to %q", raw, host)
				}
			}
		}
	})
}
