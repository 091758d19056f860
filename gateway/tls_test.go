package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/qwen-appliance/qwen-appliance/gateway/certs"
)

// tlsDir makes an internal CA and a server certificate for 127.0.0.1.
func tlsDir(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	if err := certs.Init(certs.Options{Dir: dir, Hosts: []string{"gateway.internal", "127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, certs.KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("server key mode: %v %v", st, err)
	}
	if err := certs.Init(certs.Options{Dir: dir, Hosts: []string{"x"}}); err == nil {
		t.Fatal("tls init overwrote an existing CA")
	}
	pem, _ := os.ReadFile(filepath.Join(dir, certs.CAFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return dir, pool
}

func withTLS(dir string) func(*Options) {
	return func(o *Options) {
		o.TLSCert, o.TLSKey = filepath.Join(dir, certs.CertFile), filepath.Join(dir, certs.KeyFile)
	}
}

// handshake connects with cfg and reports the error, if any.
func handshake(addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return &st, nil
}

// permissive is a control server that accepts TLS 1.0+ and every suite Go
// has, so a refusal by the gateway is shown to be the gateway's doing.
func permissive(t *testing.T, dir string) string {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.CertFile), filepath.Join(dir, certs.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	var all []uint16
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		all = append(all, s.ID)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS10, CipherSuites: all})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func TestTLSRefusesWeakClients(t *testing.T) {
	dir, pool := tlsDir(t)
	h := newHarness(t, withTLS(dir))
	addr := h.url[len("https://"):]
	control := permissive(t, dir)
	weak := map[string]*tls.Config{
		"TLS 1.1": {RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11},
		"TLS 1.0": {RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
		"CBC suite": {RootCAs: pool, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}},
	}
	for name, cfg := range weak {
		if _, err := handshake(control, cfg); err != nil {
			t.Fatalf("%s: the control server refused it too (%v): the test would prove nothing", name, err)
		}
		if _, err := handshake(addr, cfg); err == nil {
			t.Errorf("%s: the gateway accepted it", name)
		}
	}
	// TLS 1.2 with an AEAD suite, and TLS 1.3, work.
	st, err := handshake(addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})
	if err != nil || st.Version != tls.VersionTLS12 {
		t.Fatalf("TLS 1.2: %v", err)
	}
	if st, err := handshake(addr, &tls.Config{RootCAs: pool}); err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3: %v", err)
	}
	h.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	code, hdr, body := h.do("GET", "/v1/models", h.tok["user"], nil)
	if code != 200 || hdr.Get("Strict-Transport-Security") == "" {
		t.Fatalf("over TLS: %d %s, HSTS %q", code, body, hdr.Get("Strict-Transport-Security"))
	}
}

func TestTLS13Only(t *testing.T) {
	dir, pool := tlsDir(t)
	h := newHarness(t, func(o *Options) { withTLS(dir)(o); o.TLS13Only = true })
	addr := h.url[len("https://"):]
	if _, err := handshake(addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("TLS 1.2 accepted with TLS13Only")
	}
	if _, err := handshake(addr, &tls.Config{RootCAs: pool}); err != nil {
		t.Fatal(err)
	}
}

func TestClientCertificates(t *testing.T) {
	dir, pool := tlsDir(t)
	h := newHarness(t, func(o *Options) { withTLS(dir)(o); o.ClientCA = filepath.Join(dir, certs.CAFile) })
	addr := h.url[len("https://"):]
	// TLS 1.3 reports a missing client certificate on the first read.
	try := func(cfg *tls.Config) error {
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", "https://"+addr+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+h.tok["user"])
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := try(&tls.Config{RootCAs: pool}); err == nil {
		t.Fatal("a client without a certificate got through")
	}
	ca, caKey, err := certs.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, der, err := certs.Issue(ca, caKey, []string{"alice"}, true, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cp, kp := certs.PEM(key, der)
	cert, err := tls.X509KeyPair(cp, kp)
	if err != nil {
		t.Fatal(err)
	}
	if err := try(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}); err != nil {
		t.Fatalf("a client with a CA-signed certificate: %v", err)
	}
}

func TestCertificateReloadOnSIGHUP(t *testing.T) {
	dir, pool := tlsDir(t)
	h := newHarness(t, nil) // for the token file and upstream
	h.stop()
	o := Options{Upstream: "http://" + h.direct[len("http://"):], TokensFile: h.tokensFile, AuditLog: h.auditFile,
		Listen: "127.0.0.1:0"}
	withTLS(dir)(&o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o, func(api, _ net.Addr) { addrc <- api.String() }) }()
	addr := <-addrc
	serial := func() string {
		st, err := handshake(addr, &tls.Config{RootCAs: pool})
		if err != nil {
			t.Fatal(err)
		}
		return st.PeerCertificates[0].SerialNumber.String()
	}
	before := serial()
	// Renew the certificate in place, then SIGHUP.
	ca, caKey, _ := certs.LoadCA(dir)
	key, der, _ := certs.Issue(ca, caKey, []string{"127.0.0.1"}, false, time.Now(), time.Hour)
	cp, kp := certs.PEM(key, der)
	os.WriteFile(filepath.Join(dir, certs.CertFile), cp, 0o644)
	os.WriteFile(filepath.Join(dir, certs.KeyFile), kp, 0o600)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for serial() == before {
		if time.Now().After(deadline) {
			t.Fatal("the certificate was not reloaded on SIGHUP")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestTLSOffersOnlyHTTP11(t *testing.T) {
	dir, pool := tlsDir(t)
	h := newHarness(t, withTLS(dir))
	st, err := handshake(h.url[len("https://"):], &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.NegotiatedProtocol == "h2" {
		t.Fatal("ALPN chose h2: a client offering it would speak HTTP/2 to an HTTP/1.1 server")
	}
}
