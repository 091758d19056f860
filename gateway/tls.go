package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// aeadSuites are the TLS 1.2 suites the gateway offers: ECDHE key exchange
// with AES-GCM or ChaCha20-Poly1305. CBC, RSA key exchange and 3DES are left
// out. TLS 1.3 suites are not configurable and are all AEAD.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// certStore holds the serving certificate and swaps it on reload, so a
// renewed certificate takes effect for new connections without a restart.
type certStore struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func (c *certStore) load() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cur.Store(&cert)
	return nil
}

func (c *certStore) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// tlsConfig builds the server's TLS configuration; nil when TLS is off.
func tlsConfig(o *Options) (*tls.Config, *certStore, error) {
	if o.TLSCert == "" && o.TLSKey == "" {
		if o.ClientCA != "" {
			return nil, nil, errors.New("client certificates (--client-ca) need TLS: pass --tls-cert and --tls-key")
		}
		return nil, nil, nil
	}
	if o.TLSCert == "" || o.TLSKey == "" {
		return nil, nil, errors.New("TLS needs both a certificate and a key")
	}
	cs := &certStore{certFile: o.TLSCert, keyFile: o.TLSKey}
	if err := cs.load(); err != nil {
		return nil, nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   aeadSuites,
		GetCertificate: cs.get,
		// HTTP/1.1 only: the server is not set up for HTTP/2, and OpenAI
		// clients need nothing more.
		NextProtos: []string{"http/1.1"},
	}
	if o.TLS13Only {
		cfg.MinVersion = tls.VersionTLS13
	}
	if o.ClientCA != "" {
		pem, err := os.ReadFile(o.ClientCA)
		if err != nil {
			return nil, nil, fmt.Errorf("read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("client CA %s holds no PEM certificate", o.ClientCA)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, cs, nil
}
